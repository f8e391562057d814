"""Shadow sampling (issue 12): the rungs a request did not need, called off the request path,
within a daily budget, stored in the decision log beside the live answer."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from cascade_router import Cascade, ConfigError, LogprobScorer
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.testing import Reply, ScriptedBackend


def _cascade(log: DecisionLog, strong_delay: float = 0.0, **shadow: Any) -> tuple[Cascade, ScriptedBackend]:
    strong = ScriptedBackend("strong-1", [Reply("the strong answer", delay=strong_delay, usage=(100, 50))])
    cascade = Cascade(
        [
            {
                "model": ScriptedBackend(
                    "cheap-1", [Reply("the cheap answer", confidence=0.95, usage=(100, 5))]
                ),
                "name": "cheap",
                "scorer": LogprobScorer(),
                "threshold": 0.5,
                "price": {"input_per_mtok": 1, "output_per_mtok": 1},
            },
            {"model": strong, "name": "strong", "price": {"input_per_mtok": 10, "output_per_mtok": 30}},
        ],
        tracing=False,
        decision_log=log,
        shadow={"rate": 1.0, "max_cost_per_day_usd": 5.0, **shadow},
    )
    return cascade, strong


def test_shadowing_leaves_the_answer_its_latency_and_its_cost_alone(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.db", store_content=True)
    cascade, strong = _cascade(log, strong_delay=0.5)
    started = time.perf_counter()
    result = cascade.invoke("q")
    elapsed = time.perf_counter() - started
    assert elapsed < 0.3, "the request waited for its shadow call (0.5 s)"
    assert result.output.text == "the cheap answer"
    assert result.cost_usd == pytest.approx(105 / 1e6)
    assert [a.name for a in result.attempts] == ["cheap"]
    assert cascade.engine.shadow is not None
    assert cascade.engine.shadow.drain(5)
    assert strong.calls == 1
    log.flush(5)
    (record,) = list(log.iter_records())
    assert [(a["name"], a.get("shadow", False)) for a in record["attempts"]] == [
        ("cheap", False),
        ("strong", True),
    ]
    assert record["content"]["answers"] == ["the cheap answer", "the strong answer"]
    assert record["cost_usd"] == pytest.approx(105 / 1e6)  # the shadow call is not the request's
    assert record["answered_name"] == "cheap"
    log.close()


async def test_async_requests_are_shadowed_off_the_event_loop(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.db", store_content=True)
    cascade, strong = _cascade(log, strong_delay=0.3)
    started = time.perf_counter()
    result = await cascade.ainvoke("q")
    assert time.perf_counter() - started < 0.25
    assert result.answered_by.name == "cheap"
    assert cascade.engine.shadow is not None
    assert cascade.engine.shadow.drain(5)
    assert strong.calls == 1
    log.close()


def test_the_daily_budget_caps_shadow_calls_and_drops_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "cascade_router.shadow")
    log = DecisionLog(tmp_path / "log.db")
    # each shadow call costs 100 * 10 + 50 * 30 = 2,500 per million: $0.0025; the budget $0.005
    cascade, strong = _cascade(log, max_cost_per_day_usd=0.005, max_in_flight=1)
    sampler = cascade.engine.shadow
    assert sampler is not None
    for _ in range(6):
        cascade.invoke("q")
        sampler.drain(5)
    assert strong.calls == 2
    assert sampler.spent_today == pytest.approx(0.005)
    assert sampler.dropped == {"daily budget": 4}
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "cascade_router.shadow"]
    assert "daily budget" in warning
    log.flush(5)
    records = list(log.iter_records())
    assert len(records) == 6  # every request is logged, shadowed or not
    assert sum(any(a.get("shadow") for a in r["attempts"]) for r in records) == 2
    log.close()


def test_requests_the_last_rung_answered_are_not_shadowed(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.db")
    strong = ScriptedBackend("strong-1", ["s"])
    cascade = Cascade(
        [
            {
                "model": ScriptedBackend("cheap-1", [Reply("c", confidence=0.1)]),
                "scorer": LogprobScorer(),
                "threshold": 0.5,
            },
            {"model": strong},
        ],
        tracing=False,
        decision_log=log,
        shadow={"rate": 1.0, "max_cost_per_day_usd": 1.0},
    )
    cascade.invoke("q")
    assert cascade.engine.shadow is not None
    cascade.engine.shadow.drain(5)
    assert strong.calls == 1  # the live escalation only
    log.close()


def test_shadow_needs_a_decision_log_and_valid_settings() -> None:
    rungs = [
        {"model": ScriptedBackend("a", ["x"]), "scorer": LogprobScorer(), "threshold": 0.5},
        {"model": ScriptedBackend("b", ["y"])},
    ]
    with pytest.raises(ConfigError, match="shadow answers are stored in the decision log"):
        Cascade(rungs, tracing=False, shadow={"rate": 0.1, "max_cost_per_day_usd": 1})
    with pytest.raises(ConfigError, match=r"shadow\.rate"):
        Cascade(rungs, tracing=False, decision_log=":memory:", shadow={"rate": 2, "max_cost_per_day_usd": 1})


def test_langchain_shadow_calls_report_to_no_handler(tmp_path: Path) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    from langchain_cascade_router import CascadeChatModel
    from langchain_cascade_router.testing import ScriptedChatModel

    class Runs(BaseCallbackHandler):
        def __init__(self) -> None:
            self.names: list[str] = []

        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            self.names.append(kwargs.get("name") or str(kwargs.get("tags") or []))

    from langchain_cascade_router import JudgeScorer

    log = DecisionLog(tmp_path / "log.db", store_content=True)
    strong = ScriptedChatModel(model_name="strong", replies=[Reply("the strong answer")])
    judge = ScriptedChatModel(model_name="judge", replies=[Reply("No")])
    llm = CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(model_name="cheap", replies=[Reply("cheap", confidence=0.95)]),
                "scorer": LogprobScorer(),
                "threshold": 0.5,
            },
            {
                "model": ScriptedChatModel(model_name="middle", replies=[Reply("middle")]),
                "scorer": JudgeScorer(judge=judge),
                "threshold": 0.5,
            },
            {"model": strong},
        ],
        tracing=False,
        decision_log=log,
        shadow={"rate": 1.0, "max_cost_per_day_usd": 1.0},
    )
    handler = Runs()
    assert llm.invoke("q", {"callbacks": [handler]}).content == "cheap"
    sampler = llm._ladder.engine.shadow
    assert sampler is not None
    assert sampler.drain(5)
    # the cascade's run and the cheap rung's; not the shadow calls (middle, its judge, strong)
    assert len(handler.names) == 2
    log.flush(5)
    (record,) = list(log.iter_records())
    assert record["content"]["answers"] == ["cheap", "middle", "the strong answer"]
    assert record["attempts"][1]["scorer_input_tokens"] > 0  # the judge was called, unreported
    log.close()
