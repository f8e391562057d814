"""The ``early_abort`` mode (issue 13): a scored rung is streamed from the provider, judged on its
prefix, and abandoned as soon as the rule says it will be rejected; an accepted answer is the
same as in ``buffered`` mode and still reaches the caller only once accepted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI

from cascade_router import Cascade, LogprobScorer
from cascade_router.engine import Finished, LiveChunk, WholeAnswer
from cascade_router.model_io import ModelOutput, Request
from cascade_router.scorers.learned import LearnedScorer
from cascade_router.testing import Reply, ScriptedBackend
from cascade_router.testing.fault_server import FaultServer, tokens
from langchain_cascade_router import CascadeChatModel

LONG = " ".join(f"word{i}" for i in range(40))


def _ladder(cheap: Reply, *, aggregate: str = "min", threshold: float = 0.5, **settings: Any) -> Cascade:
    return Cascade(
        [
            {
                "model": ScriptedBackend("cheap", [cheap]),
                "name": "cheap",
                "scorer": LogprobScorer(aggregate=aggregate),  # type: ignore[arg-type]
                "threshold": threshold,
                "price": {"input_per_mtok": 1, "output_per_mtok": 1},
            },
            {"model": ScriptedBackend("strong", [Reply("the strong answer")]), "name": "strong", "price": 0},
        ],
        tracing=False,
        **settings,
    )


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_hopeless_prefix_is_abandoned_at_the_first_check(mode: str) -> None:
    cascade = _ladder(Reply(LONG, confidence=0.2), early_abort={"check_every": 8})
    result = cascade.invoke("q") if mode == "invoke" else asyncio.run(cascade.ainvoke("q"))
    assert result.answered_by.name == "strong"
    first = result.attempts[0]
    assert first.decision == "escalate"
    assert first.reason.startswith("early abort: a token of probability"), first.reason
    assert "after 8 chunks" in first.reason
    assert first.details["aborted_after_chunks"] == 8
    assert first.output is not None
    assert first.output.text == "".join(
        LONG.split(" ")[i] if i == 0 else " " + LONG.split(" ")[i] for i in range(8)
    )
    # The prefix is billed: estimated tokens (the stream ended before the provider's usage).
    assert first.usage is not None
    assert first.usage.output_tokens == 8
    assert first.details["usage_estimated"] is True
    assert first.cost_usd is not None
    assert first.cost_usd > 0


def test_the_margin_rule_waits_for_min_tokens() -> None:
    cascade = _ladder(
        Reply(LONG, confidence=0.3),
        aggregate="mean",
        threshold=0.6,
        early_abort={"check_every": 4, "min_tokens": 12, "margin": 0.1},
    )
    first = cascade.invoke("q").attempts[0]
    assert first.reason.startswith("early abort: prefix score 0.3"), first.reason
    assert first.details["aborted_after_chunks"] == 12


def test_a_confident_answer_is_the_same_as_buffered() -> None:
    buffered = _ladder(Reply(LONG, confidence=0.95)).invoke("q")
    aborting = _ladder(Reply(LONG, confidence=0.95), early_abort={}).invoke("q")
    assert aborting.answered_by.name == buffered.answered_by.name == "cheap"
    assert aborting.output.text == buffered.output.text == LONG
    assert aborting.answered_by.score == pytest.approx(buffered.answered_by.score)
    assert aborting.answered_by.reason == buffered.answered_by.reason


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_stream_shows_only_the_accepted_answer(mode: str) -> None:
    cascade = _ladder(Reply(LONG, confidence=0.2), early_abort={"check_every": 4})

    async def collect() -> list[Any]:
        return [e async for e in cascade.astream("q")]

    events = list(cascade.stream("q")) if mode == "stream" else asyncio.run(collect())
    shown = "".join(e.native if isinstance(e, LiveChunk) else e.output.text for e in events[:-1])
    assert shown == "the strong answer"
    assert not any(isinstance(e, WholeAnswer) and "word" in e.output.text for e in events)
    assert isinstance(events[-1], Finished)
    assert events[-1].result.attempts[0].decision == "escalate"


def test_a_scorer_without_a_prefix_check_scores_the_whole_answer() -> None:
    def judge(request: Request, output: ModelOutput) -> float:
        return 0.9 if output.text == LONG else 0.0

    cascade = Cascade(
        [
            {"model": ScriptedBackend("cheap", [Reply(LONG)]), "scorer": judge, "threshold": 0.5},
            {"model": ScriptedBackend("strong", [Reply("strong")])},
        ],
        early_abort={"check_every": 1},
        tracing=False,
    )
    result = cascade.invoke("q")
    assert result.answered_by.rung == 0
    assert result.output.text == LONG


def test_a_prefix_check_that_raises_never_cuts_an_answer() -> None:
    class Broken(LogprobScorer):
        def score_prefix(self, request: Request, partial: ModelOutput, threshold: float) -> Any:
            raise RuntimeError("broken prefix check")

    cascade = Cascade(
        [
            {
                "model": ScriptedBackend("cheap", [Reply(LONG, confidence=0.9)]),
                "scorer": Broken(),
                "threshold": 0.5,
            },
            {"model": ScriptedBackend("strong", [Reply("strong")])},
        ],
        early_abort={"check_every": 1},
        tracing=False,
    )
    assert cascade.invoke("q").answered_by.rung == 0


def test_learned_scorer_abandons_a_wrong_stated_calculation(tmp_path: Any) -> None:
    from cascade_router.scorers.learned import Example, fit

    examples = [
        Example("What is 6 times 7?", "6 x 7 = 42. #### 42", 1.0),
        Example("What is 6 times 8?", "6 x 8 = 48. #### 48", 1.0),
        Example("What is 5 times 7?", "5 x 7 = 36. #### 36", 0.0),
        Example("What is 3 times 7?", "3 x 7 = 22. #### 22", 0.0),
    ] * 5
    scorer = LearnedScorer(model=fit(examples))
    partial = ModelOutput(text="First, 6 x 7 = 43. Then we")
    check = scorer.score_prefix(Request.from_text("What is 6 times 7 plus 1?"), partial, 0.5)
    assert check is not None
    assert check.hopeless is not None
    assert "6 x 7 = 43" in check.hopeless
    unfinished = scorer.score_prefix(Request.from_text("q"), ModelOutput(text="6 x 7 = 4"), 0.5)
    assert unfinished is not None
    assert unfinished.hopeless is None  # "4" may be the start of "42"


@pytest.fixture(scope="module")
def slow_server() -> Iterator[FaultServer]:
    with FaultServer(token_delay_s=0.1) as srv:
        yield srv


def _wire_rungs(url: str, kind: str, http: httpx.Client | None = None) -> list[dict[str, Any]]:
    if kind == "core":
        cheap: Any = {
            "provider": "openai",
            "model": "ok/abort",
            "base_url": url,
            "api_key": "sk-x",
            "max_retries": 0,
        }
        strong: Any = {
            "provider": "openai",
            "model": "ok/strong",
            "base_url": url,
            "api_key": "sk-x",
            "max_retries": 0,
        }
    else:
        cheap = ChatOpenAI(model="ok/abort-lc", base_url=url, api_key="sk-x", max_retries=0, http_client=http)  # type: ignore[arg-type]
        strong = ChatOpenAI(
            model="ok/strong-lc", base_url=url, api_key="sk-x", max_retries=0, http_client=http
        )  # type: ignore[arg-type]
    # The server's tokens have probability 0.95: a `min` threshold of 0.99 rejects every answer.
    return [
        {
            "model": cheap,
            "name": "cheap",
            "scorer": {"kind": "logprob", "aggregate": "min"},
            "threshold": 0.99,
            "price": 0,
        },
        {"model": strong, "name": "strong", "price": 0},
    ]


@pytest.mark.parametrize("kind", ["core", "langchain"])
def test_on_the_wire_the_cheap_rung_stream_is_closed_early(slow_server: FaultServer, kind: str) -> None:
    words = len(tokens(slow_server.answer))
    with httpx.Client() as http:
        rungs = _wire_rungs(slow_server.url, kind, http)
        settings = {"early_abort": {"check_every": 3}, "tracing": False}
        entry: Any = (
            Cascade(rungs, **settings) if kind == "core" else CascadeChatModel(rungs=rungs, **settings)
        )
        got = entry.invoke("What is 6 times 7?")
        if isinstance(entry, Cascade):
            entry.close()
    attempts = (
        [a.to_dict() for a in got.attempts]
        if kind == "core"
        else got.response_metadata["cascade"]["attempts"]
    )
    assert attempts[-1]["name"] == "strong"
    assert attempts[0]["reason"].startswith("early abort: a token of probability 0.95"), attempts[0]
    assert attempts[0]["reason"].endswith("(after 3 chunks)")
    cheap = slow_server.requests_for("ok/abort" if kind == "core" else "ok/abort-lc")[-1]
    assert cheap.stream
    time.sleep(0.3)  # the server notices the closed connection at its next write
    # The provider stopped generating soon after the third token instead of finishing the answer.
    assert cheap.chunks_sent < words, (cheap.chunks_sent, words)


def test_a_prefix_model_is_fitted_saved_and_used(tmp_path: Any) -> None:
    from cascade_router.scorers.learned import PREFIX_CHARS, Example, LearnedModel, fit

    good = "We multiply six by seven, which gives forty-two, so the final answer is 42. #### 42"
    bad = "Hmm, maybe we add them? Six plus seven is thirteen, I think, so perhaps it is 13. #### 13"
    examples = [Example(f"What is 6 times 7? ({i})", good if i % 2 else bad, bool(i % 2)) for i in range(40)]
    targets = [0.9 if e.good else 0.1 for e in examples]
    model = fit(examples, prefixes=PREFIX_CHARS, prefix_targets=targets)
    assert model.prefix is not None
    assert model.prefix.info["targets"] == "cross-fitted scores"
    model.save(tmp_path / "scorer.json")
    loaded = LearnedModel.load(tmp_path / "scorer.json")
    assert loaded.prefix is not None
    scorer = LearnedScorer(model=loaded)
    request = Request.from_text("What is 6 times 7? (99)")
    hopeful = scorer.score_prefix(request, ModelOutput(text=good[:64]), 0.5)
    doubtful = scorer.score_prefix(request, ModelOutput(text=bad[:64]), 0.5)
    assert hopeful is not None
    assert doubtful is not None
    assert hopeful.score is not None
    assert doubtful.score is not None
    assert hopeful.score > 0.5 > doubtful.score
    # Without a prefix model only the scorer's own rule can abandon: no score to compare.
    plain = LearnedScorer(model=fit(examples)).score_prefix(request, ModelOutput(text=bad[:64]), 0.5)
    assert plain is not None
    assert plain.score is None
