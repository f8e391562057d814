"""The engine's fallback, timeouts, retries, exhaustion and streaming, on the core backend fake."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cascade_router import (
    Cascade,
    CascadeExhaustedError,
    CascadeStreamError,
    Finished,
    LiveChunk,
    Price,
    RejectedAnswer,
    RungTimeoutError,
    WholeAnswer,
)
from cascade_router.model_io import Usage
from cascade_router.pricing import cost_usd
from cascade_router.testing import Reply, ScriptedBackend
from tests.core.helpers import ScriptedScore


def ladder(*backends: ScriptedBackend, threshold: float = 0.5, **kwargs: object) -> Cascade:
    rungs = [{"model": b, "scorer": ScriptedScore(), "threshold": threshold} for b in backends[:-1]]
    rungs.append({"model": backends[-1]})
    return Cascade(rungs, **kwargs)  # type: ignore[arg-type]


def scored(text: str, score: float, **kw: object) -> Reply:
    return Reply(text, extra={"score": score}, **kw)  # type: ignore[arg-type]


def test_timeout_falls_back_sync() -> None:
    slow = ScriptedBackend("slow", [scored("late", 0.9, delay=2.0)])
    fast = ScriptedBackend("fast", ["on time"])
    cascade = Cascade(
        [{"model": slow, "timeout": 0.1, "scorer": ScriptedScore(), "threshold": 0.5}, {"model": fast}]
    )
    t0 = time.perf_counter()
    result = cascade.invoke("q")
    assert time.perf_counter() - t0 < 1.5
    assert result.output.text == "on time"
    assert result.attempts[0].decision == "error"
    assert result.attempts[0].error == "RungTimeoutError: rung 'slow' gave no answer within 0.1 s"


async def test_timeout_falls_back_async() -> None:
    slow = ScriptedBackend("slow", [scored("late", 0.9, delay=5.0)])
    fast = ScriptedBackend("fast", ["on time"])
    cascade = Cascade(
        [{"model": slow, "timeout": 0.05, "scorer": ScriptedScore(), "threshold": 0.5}, {"model": fast}]
    )
    result = await cascade.ainvoke("q")
    assert result.output.text == "on time"
    assert isinstance(result.attempts[0].exception, RungTimeoutError)


def test_retries_before_falling_back() -> None:
    flaky = ScriptedBackend("flaky", [ConnectionError("1"), scored("ok", 0.9)], cycle=False)
    strong = ScriptedBackend("strong", ["s"])
    cascade = Cascade(
        [{"model": flaky, "max_retries": 1, "scorer": ScriptedScore(), "threshold": 0.5}, {"model": strong}]
    )
    result = cascade.invoke("q")
    assert result.output.text == "ok"
    assert flaky.calls == 2
    assert strong.calls == 0


def test_exhausted_ladder_raises_one_group_naming_every_rung() -> None:
    a = ScriptedBackend("model-a", [ConnectionError("refused")])
    b = ScriptedBackend("model-b", [scored("meh", 0.1)])
    c = ScriptedBackend("model-c", [RuntimeError("HTTP 503")])
    cascade = Cascade(
        [
            {"model": a, "name": "a", "scorer": ScriptedScore(), "threshold": 0.5},
            {"model": b, "name": "b", "scorer": ScriptedScore(), "threshold": 0.5},
            {"model": c, "name": "c"},
        ]
    )
    with pytest.raises(CascadeExhaustedError) as info:
        cascade.invoke("q")
    exc = info.value
    assert isinstance(exc, ExceptionGroup)
    message = str(exc)
    assert "rung 0 'a' (model-a): ConnectionError: refused" in message
    assert "rung 1 'b' (model-b): score 0.100 < threshold 0.5" in message
    assert "rung 2 'c' (model-c): RuntimeError: HTTP 503" in message
    assert [type(e) for e in exc.exceptions] == [ConnectionError, RejectedAnswer, RuntimeError]
    assert [a.decision for a in exc.attempts] == ["error", "escalate", "error"]
    # except* splits keep the class and the attempt records.
    try:
        raise exc
    except* ConnectionError as group:
        assert isinstance(group, CascadeExhaustedError)
        assert len(group.attempts) == 3
    except* Exception:
        pass


def test_on_exhausted_best_returns_best_scored_answer() -> None:
    a = ScriptedBackend("a", [scored("better", 0.4)])
    b = ScriptedBackend("b", [scored("worse", 0.2)])
    c = ScriptedBackend("c", [TimeoutError()])
    result = ladder(a, b, c, on_exhausted="best").invoke("q")
    assert result.outcome == "best"
    assert result.output.text == "better"


def test_accept_last_off_holds_the_last_rung_to_its_threshold() -> None:
    a = ScriptedBackend("a", [scored("x", 0.1)])
    b = ScriptedBackend("b", [scored("y", 0.2)])
    cascade = Cascade(
        [
            {"model": a, "scorer": ScriptedScore(), "threshold": 0.5},
            {"model": b, "scorer": ScriptedScore(), "threshold": 0.5},
        ],
        accept_last=False,
    )
    with pytest.raises(CascadeExhaustedError):
        cascade.invoke("q")


def test_invalid_answer_escalates_before_scoring() -> None:
    empty = ScriptedBackend("empty", [scored("", 0.99)])
    result = ladder(empty, ScriptedBackend("s", ["fine"])).invoke("q")
    assert result.attempts[0].reason == "invalid: empty answer"
    assert result.attempts[0].method == "validity"
    assert result.attempts[0].score == 0.0


def events(cascade: Cascade) -> list[object]:
    return list(cascade.stream("q"))


def test_stream_buffers_scored_rungs_and_streams_the_last() -> None:
    cheap = ScriptedBackend("cheap", [scored("nope", 0.1)])
    strong = ScriptedBackend("strong", ["the strong answer"])
    evs = events(ladder(cheap, strong))
    assert all(isinstance(e, LiveChunk) for e in evs[:-1])
    assert "".join(e.native for e in evs[:-1]) == "the strong answer"  # type: ignore[union-attr]
    assert isinstance(evs[-1], Finished)
    assert evs[-1].result.answered_by.ttft_s is not None


def test_stream_accepted_cheap_answer_comes_whole() -> None:
    cheap = ScriptedBackend("cheap", [scored("yes", 0.9)])
    evs = events(ladder(cheap, ScriptedBackend("strong", ["s"])))
    assert isinstance(evs[0], WholeAnswer)
    assert evs[0].output.text == "yes"
    assert isinstance(evs[1], Finished)


def test_stream_failure_before_output_falls_back() -> None:
    # The middle rung is a pure fallback rung (no scorer, no validity check): it streams live.
    first = ScriptedBackend("first", [scored("nope", 0.1)])
    broken = ScriptedBackend(
        "broken", [Reply("never shown", error=ConnectionError("reset"), fail_after_chunks=0)]
    )
    last = ScriptedBackend("last", ["rescued"])
    cascade = Cascade(
        [
            {"model": first, "scorer": ScriptedScore(), "threshold": 0.5},
            {"model": broken, "validate_output": False},
            {"model": last},
        ]
    )
    evs = events(cascade)
    text = "".join(e.native for e in evs if isinstance(e, LiveChunk))
    assert text == "rescued"
    result = evs[-1].result  # type: ignore[union-attr]
    assert [a.decision for a in result.attempts] == ["escalate", "error", "accept"]


def test_stream_failure_after_output_is_a_clear_error() -> None:
    first = ScriptedBackend("first", [scored("nope", 0.1)])
    broken = ScriptedBackend(
        "broken", [Reply("one two three four", error=ConnectionError("reset"), fail_after_chunks=2)]
    )
    received = []
    with pytest.raises(CascadeStreamError, match="failed after part of its answer was streamed") as info:
        for event in ladder(first, broken).stream("q"):
            received.append(event)
    assert "".join(e.native for e in received if isinstance(e, LiveChunk)) == "one two"
    assert [a.decision for a in info.value.attempts] == ["escalate", "error"]
    assert isinstance(info.value.__cause__, ConnectionError)


async def test_astream_failure_after_output_is_a_clear_error() -> None:
    first = ScriptedBackend("first", [scored("nope", 0.1)])
    broken = ScriptedBackend("broken", [Reply("one two three", fail_after_chunks=1)])
    with pytest.raises(CascadeStreamError):
        async for _ in ladder(first, broken).astream("q"):
            pass


def test_prices_from_catalog_override_and_unknown() -> None:
    usage = Usage(1_000_000, 1_000_000)
    catalog = cost_usd(usage, provider="openai", model="gpt-4o-mini")
    assert catalog == pytest.approx(0.15 + 0.6)
    assert (
        cost_usd(
            usage, provider="openai", model="gpt-4o-mini", price=Price(input_per_mtok=1, output_per_mtok=1)
        )
        == 2
    )
    assert cost_usd(usage, provider="openai", model="no-such-model-anywhere") is None
    assert cost_usd(None, provider="openai", model="gpt-4o-mini") is None
    # LangChain's provider names map onto the catalog's.
    assert cost_usd(usage, provider="google_genai", model="gemini-2.0-flash") is not None


def test_unknown_price_makes_the_total_unknown_not_zero() -> None:
    result = Cascade([{"model": ScriptedBackend("mystery-model", ["x"])}]).invoke("q")
    assert result.attempts[0].cost_usd is None
    assert result.cost_usd is None
    assert result.to_dict()["cost_usd"] is None


def test_core_imports_without_langchain_or_llamaindex() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('langchain', 'langchain_core', 'llama_index', 'langgraph'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cascade_router, cascade_router.testing\n"
        "from cascade_router.testing import ScriptedBackend\n"
        "r = cascade_router.Cascade([{'model': ScriptedBackend('m', ['ok'])}]).invoke('q')\n"
        "assert r.output.text == 'ok'\n"
        "print('core ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "core ok"
