"""Scorers: their numbers on known inputs, and the missing-signal paths."""

from __future__ import annotations

import math

import pytest

from cascade_router import (
    CallableScorer,
    Cascade,
    FirstAvailableScorer,
    JudgeScorer,
    LogprobScorer,
    ModelOutput,
    Request,
    Score,
    TokenLogprob,
    ValidityScorer,
)
from cascade_router.openai_format import parse_logprobs
from cascade_router.scorers import read_verdict
from cascade_router.testing import Reply, ScriptedBackend, openai_logprobs

REQ = Request.from_text("What is 2+2?")


class NoCalls:
    def invoke(self, *a: object, **k: object) -> ModelOutput:
        raise AssertionError("this scorer must not call a model")

    async def ainvoke(self, *a: object, **k: object) -> ModelOutput:
        raise AssertionError("this scorer must not call a model")


def out(probs: list[float], *, top: tuple[tuple[str, float], ...] = ()) -> ModelOutput:
    tokens = tuple(TokenLogprob(f" t{i}", math.log(p), top if i == 0 else ()) for i, p in enumerate(probs))
    return ModelOutput(text="x", logprobs=tokens)


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        ("mean", (0.9 + 0.5 + 0.7) / 3),
        ("min", 0.5),
        ("geometric_mean", (0.9 * 0.5 * 0.7) ** (1 / 3)),
        ("quantile", 0.5 + 0.2 * 0.2),  # 10 % quantile of [0.5, 0.7, 0.9], linear interpolation
    ],
)
def test_logprob_aggregates(aggregate: str, expected: float) -> None:
    score = LogprobScorer(aggregate=aggregate).score(REQ, out([0.9, 0.5, 0.7]), NoCalls())  # type: ignore[arg-type]
    assert score.value == pytest.approx(expected)
    assert score.method == "logprob"


def test_first_token_margin_reads_top_alternatives() -> None:
    top = ((" t0", math.log(0.6)), (" other", math.log(0.25)))
    score = LogprobScorer(aggregate="first_token_margin").score(REQ, out([0.6, 0.9], top=top), NoCalls())  # type: ignore[arg-type]
    assert score.value == pytest.approx(0.35)


def test_first_token_margin_without_alternatives_is_missing() -> None:
    score = LogprobScorer(aggregate="first_token_margin").score(REQ, out([0.6]), NoCalls())  # type: ignore[arg-type]
    assert score.value is None
    assert "top logprobs" in (score.missing or "")


def test_no_logprobs_is_a_missing_signal_not_a_score() -> None:
    score = LogprobScorer().score(REQ, ModelOutput(text="4"), NoCalls())  # type: ignore[arg-type]
    assert score.value is None
    assert score.missing == "no logprobs returned"


def test_whitespace_tokens_are_skipped() -> None:
    tokens = (TokenLogprob(" 4", math.log(0.5)), TokenLogprob("\n", 0.0))
    score = LogprobScorer().score(REQ, ModelOutput(text=" 4\n", logprobs=tokens), NoCalls())  # type: ignore[arg-type]
    assert score.value == pytest.approx(0.5)


def test_synthetic_logprobs_have_the_asked_mean() -> None:
    lp = parse_logprobs(openai_logprobs("The answer is clearly four, I think.", 0.73, seed=3))
    assert lp is not None
    assert sum(t.prob for t in lp) / len(lp) == pytest.approx(0.73, abs=1e-6)
    assert all(len(t.top) == 3 for t in lp)


def verdict(text: str, first: list[tuple[str, float]] | None = None) -> ModelOutput:
    logprobs = None
    if first is not None:
        logprobs = (TokenLogprob(first[0][0], first[0][1], tuple(first)),)
    return ModelOutput(text=text, logprobs=logprobs, model="judge")


def test_judge_reads_p_yes_from_first_token_logprobs() -> None:
    score = read_verdict(
        verdict("Yes", [("Yes", math.log(0.6)), ("No", math.log(0.3)), ("Maybe", math.log(0.1))])
    )
    assert score.value == pytest.approx(0.6 / 0.9)
    assert score.details["source"] == "first_token_logprobs"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, it is right.", 1.0),
        ("no.", 0.0),
        ("I'd say 7/10", 0.7),
        ("Score: 0.35", 0.35),
        ("confidence = 8", 0.8),
    ],
)
def test_judge_reads_stated_verdicts(text: str, expected: float) -> None:
    assert read_verdict(verdict(text)).value == pytest.approx(expected)


def test_unparseable_judge_escalates_with_reason() -> None:
    cheap = ScriptedBackend("cheap", ["4"])
    judge = ScriptedBackend("judge", [Reply("The weather is nice", usage=(50, 5))])
    strong = ScriptedBackend("strong", ["4"])
    result = Cascade(
        [{"model": cheap, "scorer": JudgeScorer(judge=judge), "threshold": 0.5}, {"model": strong}]
    ).invoke("2+2?")
    first = result.attempts[0]
    assert first.decision == "escalate"
    assert "judge output unparseable" in first.reason
    assert first.scorer_usage.input_tokens == 50  # the judge's tokens still count
    assert result.answered_by.name == "strong"


def test_judge_prompt_shows_question_and_answer_and_its_cost_counts() -> None:
    cheap = ScriptedBackend("cheap", [Reply("Four", usage=(10, 1))])
    judge = ScriptedBackend("judge", [Reply("Yes", usage=(40, 1))])
    result = Cascade(
        [
            {
                "model": cheap,
                "scorer": JudgeScorer(judge=judge, price={"input_per_mtok": 1.0, "output_per_mtok": 2.0}),
                "threshold": 0.5,
                "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
            },
            {"model": ScriptedBackend("strong", ["4"])},
        ]
    ).invoke("What is 2+2?")
    assert result.answered_by.name == "cheap"
    sent = judge.requests[0].messages[-1].content
    assert "What is 2+2?" in sent
    assert "Four" in sent
    assert result.usage.input_tokens == 50
    assert result.cost_usd == pytest.approx((10 * 0.1 + 1 * 0.2 + 40 * 1.0 + 1 * 2.0) / 1e6)


def test_self_check_judge_uses_the_rungs_own_model() -> None:
    cheap = ScriptedBackend("cheap", ["Four", "No"])
    result = Cascade(
        [{"model": cheap, "scorer": JudgeScorer(), "threshold": 0.5}, {"model": ScriptedBackend("s", ["4"])}]
    ).invoke("2+2?")
    assert cheap.calls == 2
    assert result.attempts[0].score == 0.0
    assert result.answered_by.name == "s"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", 0.0),
        ("   ", 0.0),
        ("I'm sorry, but I can't help with that.", 0.0),
        ("As an AI, I cannot do that", 0.0),
        ("Paris.", 1.0),
    ],
)
def test_validity(text: str, value: float) -> None:
    assert ValidityScorer().score(REQ, ModelOutput(text=text), NoCalls()).value == value  # type: ignore[arg-type]


def test_validity_rejects_broken_structure() -> None:
    v = ValidityScorer()
    assert v.score(REQ, ModelOutput(text="{", parse_error="bad json"), NoCalls()).value == 0.0  # type: ignore[arg-type]
    assert v.score(REQ, ModelOutput(text="", invalid_tool_calls=("f: bad args",)), NoCalls()).value == 0.0  # type: ignore[arg-type]


async def test_callable_scorer_sync_and_async() -> None:
    seen = []

    def fn(messages: object, answer: object) -> float:
        seen.append((messages, answer))
        return 0.9

    async def afn(messages: object, answer: object) -> float:
        return 0.2

    output = ModelOutput(text="a", raw="RAW")
    assert CallableScorer(fn=fn).score(REQ, output, NoCalls()).value == 0.9  # type: ignore[arg-type]
    assert seen[0][1] == "RAW"
    assert (await CallableScorer(fn=afn).ascore(REQ, output, NoCalls())).value == 0.2  # type: ignore[arg-type]
    # An async function also works from the sync path, even inside a running loop.
    assert CallableScorer(fn=afn).score(REQ, output, NoCalls()).value == 0.2  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "high", None, True])
def test_scorer_out_of_range_is_a_scorer_error_and_escalates(bad: object) -> None:
    cheap = ScriptedBackend("cheap", ["a"])
    result = Cascade(
        [
            {"model": cheap, "scorer": lambda m, a: bad, "threshold": 0.5},
            {"model": ScriptedBackend("s", ["b"])},
        ]
    ).invoke("q")
    first = result.attempts[0]
    assert first.decision == "escalate"
    assert first.reason.startswith("scorer error: ScorerError: callable scorer returned")
    assert first.score is None
    assert result.answered_by.name == "s"


def test_scorer_exception_escalates_with_its_message() -> None:
    def broken(m: object, a: object) -> float:
        raise ZeroDivisionError("oops")

    result = Cascade(
        [
            {"model": ScriptedBackend("c", ["a"]), "scorer": broken, "threshold": 0.5},
            {"model": ScriptedBackend("s", ["b"])},
        ]
    ).invoke("q")
    assert result.attempts[0].reason == "scorer error: ZeroDivisionError: oops"
    assert result.attempts[0].error == "ZeroDivisionError: oops"


def test_first_available_falls_through_to_the_judge() -> None:
    cheap = ScriptedBackend("cheap", [Reply("4")])  # no logprobs
    judge = ScriptedBackend("judge", ["Yes"])
    scorer = FirstAvailableScorer(scorers=[{"kind": "logprob"}, JudgeScorer(judge=judge)])
    result = Cascade(
        [{"model": cheap, "scorer": scorer, "threshold": 0.5}, {"model": ScriptedBackend("s", ["b"])}]
    ).invoke("q")
    assert result.answered_by.name == "cheap"
    assert result.attempts[0].method == "judge"


def test_on_missing_accept() -> None:
    cheap = ScriptedBackend("cheap", [Reply("4")])
    result = Cascade(
        [
            {"model": cheap, "scorer": LogprobScorer(), "threshold": 0.9, "on_missing": "accept"},
            {"model": ScriptedBackend("s", ["b"])},
        ]
    ).invoke("q")
    assert result.answered_by.name == "cheap"
    assert result.attempts[0].reason.startswith("missing signal accepted")


def test_score_dataclass_missing_constructor() -> None:
    s = Score.missing_signal("logprob", "none", tokens=0)
    assert (s.value, s.missing, dict(s.details)) == (None, "none", {"tokens": 0})
