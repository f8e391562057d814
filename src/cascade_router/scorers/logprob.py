"""Confidence from the answer's own token log-probabilities."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field

from cascade_router.model_io import ModelOutput, Request, valid_logprob
from cascade_router.scorers.base import PrefixCheck, Score, Scorer, ScoringContext

Aggregate = Literal["mean", "min", "geometric_mean", "quantile", "first_token_margin"]


class LogprobScorer(Scorer):
    """Aggregates per-token probabilities into one confidence.

    Every aggregate is length-normalised: a sum of logprobs would punish long answers for being
    long (Gupta et al., 2024). Which aggregate separates right from wrong answers best depends
    on the task, so measure it on your own traffic before trusting one.
    """

    kind: Literal["logprob"] = "logprob"
    method: ClassVar[str] = "logprob"
    aggregate: Aggregate = "mean"
    """``mean``: mean token probability; ``min``: the least likely token; ``geometric_mean``:
    exp(mean logprob), the per-token perplexity inverse; ``quantile``: the ``quantile`` low
    quantile of token probabilities; ``first_token_margin``: top-1 minus top-2 probability of
    the first token (needs top alternatives)."""
    quantile: float = Field(default=0.1, gt=0, lt=1)
    """Which low quantile ``aggregate="quantile"`` reads."""
    skip_whitespace: bool = True
    """Leave out tokens that are only whitespace: they are near-certain and dilute the signal."""

    def needs_logprobs(self) -> bool:
        return True

    def score(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        if output.logprobs is None:
            return Score.missing_signal("logprob", "no logprobs returned")
        bad = next((t for t in output.logprobs if not t.valid), None)
        if bad is not None:
            # A malformed value (NaN, null, positive, +inf) says nothing about confidence:
            # reading it as certainty would accept the answer on a broken signal.
            return Score.missing_signal(
                "logprob", f"invalid logprob {bad.logprob!r} for token {bad.token!r:.40}"
            )
        tokens = [t for t in output.logprobs if not (self.skip_whitespace and not t.token.strip())] or list(
            output.logprobs
        )
        if not tokens:
            return Score.missing_signal("logprob", "answer has no tokens")
        probs = [math.exp(min(t.logprob, 0.0)) for t in tokens]
        details = {"aggregate": self.aggregate, "tokens": len(tokens)}
        match self.aggregate:
            case "mean":
                value = sum(probs) / len(probs)
            case "min":
                value = min(probs)
            case "geometric_mean":
                value = math.exp(sum(min(t.logprob, 0.0) for t in tokens) / len(tokens))
            case "quantile":
                value = _low_quantile(probs, self.quantile)
            case "first_token_margin":
                first = tokens[0]
                if not first.top:
                    return Score.missing_signal(
                        "logprob", "first_token_margin needs top logprobs (ask for top_logprobs)"
                    )
                if not all(valid_logprob(lp) for _, lp in first.top):
                    return Score.missing_signal("logprob", "invalid top logprobs for the first token")
                alternatives = sorted((lp for tok, lp in first.top if tok != first.token), reverse=True)
                runner_up = math.exp(min(alternatives[0], 0.0)) if alternatives else 0.0
                value = max(0.0, math.exp(min(first.logprob, 0.0)) - runner_up)
        return Score(min(1.0, max(0.0, value)), "logprob", details)

    def score_prefix(self, request: Request, partial: ModelOutput, threshold: float) -> PrefixCheck | None:
        """The aggregate over the tokens so far. With ``aggregate="min"`` a prefix whose least
        likely token is below the threshold is hopeless: the minimum can only go down."""
        if self.aggregate == "first_token_margin" or not partial.logprobs:
            return None
        score = self.score(request, partial, _NO_CALLS)
        if score.value is None:
            return None
        value = float(score.value)
        if self.aggregate == "min" and value < threshold:
            return PrefixCheck(value, f"a token of probability {value:.3f} < threshold {threshold:g}")
        return PrefixCheck(value)


class _NoCalls:
    """A scoring context for prefix checks, which never call a model."""

    def invoke(self, model: Any, request: Request, *, price: Any = None) -> ModelOutput:
        raise RuntimeError("a logprob scorer calls no model")

    async def ainvoke(self, model: Any, request: Request, *, price: Any = None) -> ModelOutput:
        raise RuntimeError("a logprob scorer calls no model")


_NO_CALLS = _NoCalls()


def _low_quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile, as numpy's default, without importing numpy."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
