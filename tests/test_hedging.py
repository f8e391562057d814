"""The ``hedged`` mode (issue 13): a slow scored rung is raced against the next one; the first
acceptable answer wins, the other call is cancelled (async) or abandoned to its thread (sync),
and both are recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cascade_router import Cascade, LogprobScorer
from cascade_router.testing import Reply, ScriptedBackend


def _ladder(cheap: list[Reply], strong: list[Reply], **hedge: Any) -> Cascade:
    return Cascade(
        [
            {
                "model": ScriptedBackend("cheap", cheap),
                "name": "cheap",
                "scorer": LogprobScorer(),
                "threshold": 0.5,
                "price": {"input_per_mtok": 1, "output_per_mtok": 1},
            },
            {"model": ScriptedBackend("strong", strong), "name": "strong", "price": 0},
        ],
        tracing=False,
        hedge={"delay_s": 0.1, **hedge},
    )


def _invoke(cascade: Cascade, mode: str) -> Any:
    return cascade.invoke("q") if mode == "invoke" else asyncio.run(cascade.ainvoke("q"))


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_slow_rejected_rung_is_overtaken_by_the_hedge(mode: str) -> None:
    cascade = _ladder([Reply("slow and unsure", confidence=0.1, delay=1.0)], [Reply("strong", delay=0.05)])
    result = _invoke(cascade, mode)
    assert result.answered_by.name == "strong"
    assert [a.name for a in result.attempts] == ["cheap", "strong"]
    cheap, strong = result.attempts
    assert cheap.decision == "abandoned"
    assert cheap.reason == "abandoned: the hedge's other call answered first"
    assert cheap.cost_usd is None  # it was running: the provider may bill it
    assert strong.details["hedge"] == "started after 0.100 s"
    assert result.cost_usd is None
    assert result.cost_at_least_usd == 0.0


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_the_slow_rung_still_wins_when_it_answers_first_and_is_accepted(mode: str) -> None:
    cascade = _ladder([Reply("cheap and sure", confidence=0.95, delay=0.3)], [Reply("strong", delay=2.0)])
    result = _invoke(cascade, mode)
    assert result.answered_by.name == "cheap"
    assert [a.name for a in result.attempts] == ["strong", "cheap"]
    assert result.attempts[0].decision == "abandoned"
    assert result.attempts[0].details["hedge"] == "started after 0.100 s"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_rejected_answer_waits_for_the_hedge(mode: str) -> None:
    cascade = _ladder([Reply("cheap and unsure", confidence=0.1, delay=0.2)], [Reply("strong", delay=0.4)])
    result = _invoke(cascade, mode)
    assert result.answered_by.name == "strong"
    assert [a.decision for a in result.attempts] == ["escalate", "accept"]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_fast_rung_is_not_hedged(mode: str) -> None:
    strong = ScriptedBackend("strong", [Reply("strong")])
    cascade = Cascade(
        [
            {
                "model": ScriptedBackend("cheap", [Reply("cheap", confidence=0.9)]),
                "scorer": LogprobScorer(),
                "threshold": 0.5,
            },
            {"model": strong},
        ],
        hedge={"delay_s": 1.0},
        tracing=False,
    )
    result = _invoke(cascade, mode)
    assert result.answered_by.rung == 0
    assert strong.calls == 0


def test_the_budget_caps_the_share_of_hedged_requests() -> None:
    cheap = [Reply("slow", confidence=0.9, delay=0.15)] * 10
    cascade = _ladder(cheap, [Reply("strong", delay=1.0)] * 10, max_share=0.2)
    results = [cascade.invoke("q") for _ in range(10)]
    hedged = [r for r in results if any("hedge" in a.details for a in r.attempts)]
    assert len(hedged) == 2  # 20 % of 10 requests
    assert all(r.answered_by.name == "cheap" for r in results)


def test_the_delay_is_the_rung_observed_quantile() -> None:
    cascade = _ladder(
        [Reply("fast", confidence=0.9)] * 30, [Reply("strong")] * 30, delay_s=None, min_samples=5
    )
    hedging = cascade.ladder.engine.hedging
    assert hedging is not None
    for _ in range(4):
        cascade.invoke("q")
    assert hedging.delay(0) is None  # fewer than min_samples answers seen
    cascade.invoke("q")
    delay = hedging.delay(0)
    assert delay is not None
    assert 0 < delay < 0.5


def test_a_cancelled_request_cancels_both_calls_and_records_them() -> None:
    cascade = _ladder([Reply("slow", confidence=0.9, delay=5)], [Reply("strong", delay=5)])

    async def go() -> None:
        task = asyncio.ensure_future(cascade.ainvoke("q"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("kind", ["core", "langchain", "middleware", "llamaindex"])
def test_hedging_means_the_same_on_every_entry_point(kind: str, mode: str) -> None:
    from tests.entrypoints import answer, build

    rungs = [
        {
            "replies": [Reply("slow and unsure", confidence=0.1, delay=1.0)],
            "scorer": LogprobScorer(),
            "threshold": 0.5,
        },
        {"replies": [Reply("Paris is the capital", delay=0.05)]},
    ]
    entry, _ = build(kind, rungs, hedge={"delay_s": 0.1})
    text, attempts = asyncio.run(answer(entry, mode))
    assert text == "Paris is the capital"
    assert [(a["name"], a["decision"]) for a in attempts] == [("r0", "abandoned"), ("r1", "accept")]
