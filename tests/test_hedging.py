"""The ``hedged`` mode (issue 13): a slow scored rung is raced against the next one; the first
acceptable answer wins, the other call is cancelled (async) or abandoned to its thread (sync),
and both are recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cascade_router import Cascade, LogprobScorer
from cascade_router.engine import Finished, LiveChunk
from cascade_router.errors import ConfigError
from cascade_router.model_io import ModelOutput, Request
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.scorers.base import PrefixCheck, Score, Scorer
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


def test_a_cancelled_request_cancels_both_calls_and_records_them(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.db")
    cheap = ScriptedBackend("cheap", [Reply("slow", confidence=0.9, delay=5)])
    strong = ScriptedBackend("strong", [Reply("strong", delay=5)])
    cascade = Cascade(
        [
            {"model": cheap, "name": "cheap", "scorer": LogprobScorer(), "threshold": 0.5},
            {"model": strong, "name": "strong"},
        ],
        tracing=False,
        hedge={"delay_s": 0.1},
        decision_log=log,
    )

    async def go() -> None:
        task = asyncio.ensure_future(cascade.ainvoke("q"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert (cheap.calls, strong.calls) == (1, 1)  # the hedge had started
    # Both calls were cut off (answered, they would be accepted), and both are on record.
    log.flush()
    (record,) = list(log.iter_records())
    assert [(a["name"], a["decision"]) for a in record["attempts"]] == [
        ("cheap", "abandoned"),
        ("strong", "abandoned"),
    ]
    log.close()


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


# -- hedging on a low prefix score (``when: low_prefix``) ----------------------------------------

WORDS = [f"word{i}" for i in range(40)]
LONG = " ".join(WORDS)


class _Doubt(Scorer):
    """Scores an answer by its words: "hmm" is doubt (0.35), "sure" certainty (0.9); the prefix
    check reads the same words, so tests choose where a prefix turns doubtful (no logprobs
    needed, so every entry point streams it)."""

    kind: str = "doubt"

    @staticmethod
    def _value(text: str) -> float | None:
        words = text.split()
        doubts = sum(w == "hmm" for w in words)
        sure = sum(w == "sure" for w in words)
        if not doubts and not sure:
            return None
        return 0.35 if doubts >= sure else 0.9

    def score(self, request: Request, output: ModelOutput, ctx: Any) -> Score:
        return Score(self._value(output.text) or 0.0, "doubt")

    def score_prefix(self, request: Request, partial: ModelOutput, threshold: float) -> PrefixCheck | None:
        return PrefixCheck(self._value(partial.text))


def _prefix_ladder(cheap: Reply, strong: Reply, **hedge: Any) -> tuple[Cascade, ScriptedBackend]:
    strong_model = ScriptedBackend("strong", [strong])
    cascade = Cascade(
        [
            {
                "model": ScriptedBackend("cheap", [cheap]),
                "name": "cheap",
                "scorer": _Doubt(),
                "threshold": 0.5,
            },
            {"model": strong_model, "name": "strong", "price": 0},
        ],
        tracing=False,
        early_abort={"check_every": 4, "min_tokens": 8, "margin": 0.3},
        hedge={"when": "low_prefix", "prefix_margin": 0.05, "max_share": 1.0, **hedge},
    )
    return cascade, strong_model


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_doubtful_prefix_starts_the_hedge_while_the_rung_goes_on(mode: str) -> None:
    # 0.35 is under threshold - prefix_margin (0.45) but not under threshold - margin (0.2):
    # doubtful, not hopeless. The cheap answer streams for ~1.2 s; the hedge answers in 0.1 s.
    doubtful = Reply(" ".join(["hmm", *WORDS]), chunk_delay=0.03)
    cascade, _ = _prefix_ladder(doubtful, Reply("the strong answer", delay=0.1))
    result = _invoke(cascade, mode)
    assert result.answered_by.name == "strong"
    assert result.output.text == "the strong answer"
    cheap, strong = result.attempts
    assert (cheap.name, cheap.decision) == ("cheap", "abandoned")
    assert cheap.reason == "abandoned: the hedge's other call answered first"
    assert "aborted_after_chunks" not in cheap.details  # hedged, not abandoned by the rule
    why = strong.details["hedge"]
    assert "on a low prefix: prefix score 0.350 < threshold 0.5 - prefix_margin 0.05 (after 8 chunks)" in why
    assert why.startswith("started after ")


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_doubtful_start_that_ends_accepted_still_wins(mode: str) -> None:
    # Doubt in the first words, then more certainty: the hedge starts, the cheap answer
    # finishes first (~0.4 s, the hedge needs 3 s) and is accepted; the hedge is the loser.
    recovering = Reply(" ".join(["hmm", *WORDS[:10], "sure", "sure"]), chunk_delay=0.03)
    cascade, strong = _prefix_ladder(recovering, Reply("the strong answer", delay=3.0))
    result = _invoke(cascade, mode)
    assert result.answered_by.name == "cheap"
    assert [a.name for a in result.attempts] == ["strong", "cheap"]
    hedge, cheap = result.attempts
    assert hedge.decision == "abandoned"
    assert "on a low prefix" in hedge.details["hedge"]
    assert cheap.decision == "accept"
    assert cheap.score == 0.9
    assert strong.calls == 1


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_confident_prefix_is_never_hedged_however_slow(mode: str) -> None:
    # low_prefix alone: no delay rule, so a slow rung whose prefix looks fine runs alone.
    slow_sure = Reply(" ".join(["sure", *WORDS[:12]]), delay=0.3, chunk_delay=0.02)
    cascade, strong = _prefix_ladder(slow_sure, Reply("the strong answer"))
    result = _invoke(cascade, mode)
    assert result.answered_by.name == "cheap"
    assert strong.calls == 0
    assert all("hedge" not in a.details for a in result.attempts)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_either_hedges_a_slow_rung_whose_prefix_looks_fine(mode: str) -> None:
    slow_sure = Reply(" ".join(["sure", *WORDS[:12]]), delay=1.0, chunk_delay=0.02)
    cascade, _ = _prefix_ladder(slow_sure, Reply("the strong answer", delay=3.0), when="either", delay_s=0.1)
    result = _invoke(cascade, mode)
    assert result.answered_by.name == "cheap"
    assert result.attempts[0].details["hedge"] == "started after 0.100 s"


def test_the_budget_also_caps_low_prefix_hedges() -> None:
    doubtful = Reply(" ".join(["hmm", *WORDS[:12]]), chunk_delay=0.005)
    cascade, strong = _prefix_ladder(doubtful, Reply("the strong answer"), max_share=0.25)
    for _ in range(8):
        cascade.invoke("q")
    hedged = cascade.ladder.engine.hedging
    assert hedged is not None
    assert hedged.hedges == 2  # 25 % of 8 requests
    # The other six waited for the cheap answer, were rejected, then called strong.
    assert strong.calls == 8


def test_low_prefix_needs_early_abort_and_a_smaller_margin() -> None:
    rungs = [
        {"model": ScriptedBackend("cheap", ["a"]), "scorer": _Doubt(), "threshold": 0.5},
        {"model": ScriptedBackend("strong", ["b"])},
    ]
    with pytest.raises(ConfigError, match=r"hedge\.when: 'low_prefix' needs early_abort"):
        Cascade(rungs, hedge={"when": "low_prefix"}, tracing=False)
    with pytest.raises(
        ConfigError, match=r"hedge\.prefix_margin: 0\.2 is not under early_abort\.margin 0\.15"
    ):
        Cascade(rungs, hedge={"when": "either", "prefix_margin": 0.2}, early_abort={}, tracing=False)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("kind", ["core", "langchain", "middleware", "llamaindex"])
def test_low_prefix_hedging_means_the_same_on_every_entry_point(kind: str, mode: str) -> None:
    from tests.entrypoints import answer, build

    rungs = [
        {
            "replies": [Reply(" ".join(["hmm", *WORDS]), chunk_delay=0.03)],
            "scorer": _Doubt(),
            "threshold": 0.5,
        },
        {"replies": [Reply("Paris is the capital", delay=0.05)]},
    ]
    entry, _ = build(
        kind,
        rungs,
        early_abort={"check_every": 4, "min_tokens": 8, "margin": 0.3},
        hedge={"when": "low_prefix", "prefix_margin": 0.05},
    )
    text, attempts = asyncio.run(answer(entry, mode))
    assert text == "Paris is the capital"
    if kind == "middleware":
        # An agent's model call goes through the agent's handler, which cannot be streamed
        # from inside the middleware: the rung answers whole (buffered) and is rejected.
        assert [(a["name"], a["decision"]) for a in attempts] == [("r0", "escalate"), ("r1", "accept")]
        return
    assert [(a["name"], a["decision"]) for a in attempts] == [("r0", "abandoned"), ("r1", "accept")]


# -- hedging a rung that streams live, on its first token ----------------------------------------


def _live_ladder(
    primary: Reply, backup: Reply, log: DecisionLog | None = None
) -> tuple[Cascade, list[ScriptedBackend]]:
    models = [ScriptedBackend("primary", [primary]), ScriptedBackend("backup", [backup])]
    cascade = Cascade(
        # No scorer and no validity check on the first rung: nothing about its answer can reject
        # it, so it streams live.
        [
            {"model": models[0], "name": "primary", "validate_output": False},
            {"model": models[1], "name": "backup"},
        ],
        tracing=False,
        hedge={"delay_s": 0.1},
        decision_log=log,
    )
    return cascade, models


def _stream(cascade: Cascade, mode: str) -> tuple[list[LiveChunk], Any]:
    async def collect() -> list[Any]:
        return [e async for e in cascade.astream("q")]

    events = list(cascade.stream("q")) if mode == "stream" else asyncio.run(collect())
    finished = events[-1]
    assert isinstance(finished, Finished)
    return [e for e in events if isinstance(e, LiveChunk)], finished.result


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_live_rung_silent_past_the_delay_is_overtaken_by_the_next(mode: str) -> None:
    cascade, models = _live_ladder(Reply("primary answer", delay=1.0), Reply("backup answer", delay=0.05))
    chunks, result = _stream(cascade, mode)
    assert "".join(c.native for c in chunks) == "backup answer"
    assert {c.rung for c in chunks} == {1}  # nothing of the loser reached the caller
    assert [(a.name, a.decision) for a in result.attempts] == [("primary", "abandoned"), ("backup", "accept")]
    assert result.attempts[0].reason == "abandoned: the hedge's other call answered first"
    assert result.attempts[1].details["hedge"] == "started after 0.100 s"
    assert [m.calls for m in models] == [1, 1]


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_the_live_rung_keeps_the_stream_when_its_first_token_comes_first(mode: str) -> None:
    cascade, _ = _live_ladder(Reply("primary answer", delay=0.3), Reply("backup answer", delay=3.0))
    chunks, result = _stream(cascade, mode)
    assert "".join(c.native for c in chunks) == "primary answer"
    assert [(a.name, a.decision) for a in result.attempts] == [("backup", "abandoned"), ("primary", "accept")]
    assert result.attempts[0].details["hedge"] == "started after 0.100 s"


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_live_rung_that_fails_during_the_race_leaves_it_to_the_hedge(mode: str) -> None:
    failing = Reply("never", delay=0.3, error=ConnectionError("reset by peer"))
    cascade, models = _live_ladder(failing, Reply("backup answer", delay=0.6))
    chunks, result = _stream(cascade, mode)
    assert "".join(c.native for c in chunks) == "backup answer"
    assert [(a.name, a.decision) for a in result.attempts] == [("primary", "error"), ("backup", "accept")]
    assert "reset by peer" in (result.attempts[0].error or "")
    assert [m.calls for m in models] == [1, 1]  # the backup was not called a second time


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_live_rung_with_a_prompt_first_token_is_not_hedged(mode: str) -> None:
    cascade, models = _live_ladder(Reply("primary answer"), Reply("backup answer"))
    _, result = _stream(cascade, mode)
    assert result.answered_by.name == "primary"
    assert models[1].calls == 0


def test_a_request_cancelled_during_a_live_race_records_both_calls(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.db")
    cascade, _ = _live_ladder(Reply("primary", delay=5), Reply("backup", delay=5), log)

    async def go() -> None:
        async def consume() -> None:
            async for _ in cascade.astream("q"):
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    log.flush()
    (record,) = list(log.iter_records())
    assert [(a["name"], a["decision"]) for a in record["attempts"]] == [
        ("primary", "abandoned"),
        ("backup", "abandoned"),
    ]
    log.close()


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("kind", ["core", "langchain", "middleware", "llamaindex"])
def test_hedging_a_live_rung_means_the_same_on_every_entry_point(kind: str, mode: str) -> None:
    from tests.entrypoints import answer, build

    rungs = [
        {"replies": [Reply("slow primary", delay=1.0)], "validate_output": False},
        {"replies": [Reply("Paris is the capital", delay=0.05)]},
    ]
    entry, _ = build(kind, rungs, hedge={"delay_s": 0.1})
    text, attempts = asyncio.run(answer(entry, mode))
    assert text == "Paris is the capital"
    assert [(a["name"], a["decision"]) for a in attempts] == [("r0", "abandoned"), ("r1", "accept")]
