"""The escalation policy: pure, synchronous, free of I/O.

Every driver (sync, async, streaming, LangChain, the agent middleware) asks these functions
what to do and does it. Keeping the decisions here, away from the code that calls models, is
what guarantees that ``invoke`` and ``astream`` cannot disagree about who answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Decision = Literal["accept", "escalate", "error"]
OnMissing = Literal["escalate", "accept"]
OnToolCall = Literal["accept", "score", "escalate"]
OnExhausted = Literal["raise", "best"]
Outcome = Literal["accepted", "best", "exhausted"]


class RungRule(Protocol):
    """What the policy needs to know about a rung (``Rung`` and ``RungRuntime`` both fit)."""

    @property
    def threshold(self) -> float | None: ...
    @property
    def on_missing(self) -> OnMissing: ...
    @property
    def on_tool_call(self) -> OnToolCall: ...
    @property
    def has_scorer(self) -> bool: ...
    @property
    def validate_output(self) -> bool: ...


class AttemptView(Protocol):
    """What the policy needs to know about an attempt that already happened."""

    @property
    def rung(self) -> int: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def score(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    reason: str


@dataclass(frozen=True, slots=True)
class Conclusion:
    accepted: int | None
    """Index into the attempts of the answer to return; None when there is none."""
    outcome: Outcome


def is_final(rung_index: int, n_rungs: int, accept_last: bool) -> bool:
    """The last rung is accepted without a threshold unless ``accept_last`` is off."""
    return accept_last and rung_index == n_rungs - 1


def streams_live(rule: RungRule, *, final: bool) -> bool:
    """Whether a rung's answer can go to the caller while it is generated.

    Only when nothing about the answer's content can change the decision: the final rung, or
    a pure fallback rung (no scorer, no validity check), whose only way to fail is an error
    before its first chunk.
    """
    return final or (not rule.has_scorer and not rule.validate_output)


def should_score(rule: RungRule, *, is_tool_call: bool) -> bool:
    """Whether to run the rung's scorer on an answer that passed the validity check."""
    if not rule.has_scorer:
        return False
    return not is_tool_call or rule.on_tool_call == "score"


def decide(
    rule: RungRule,
    *,
    final: bool,
    error: BaseException | None = None,
    invalid: str | None = None,
    is_tool_call: bool = False,
    score: float | None = None,
    missing: str | None = None,
    scorer_error: str | None = None,
) -> Verdict:
    """The decision for one attempt, from what happened during it.

    Order matters: an error beats everything; a final rung accepts anything that arrived; an
    invalid answer is never accepted elsewhere; then the tool-call policy; then the score.
    """
    if error is not None:
        return Verdict("error", f"error: {type(error).__name__}")
    if final:
        return Verdict("accept", "final rung")
    if invalid is not None:
        return Verdict("escalate", f"invalid: {invalid}")
    if is_tool_call and rule.on_tool_call != "score":
        if rule.on_tool_call == "accept":
            return Verdict("accept", "valid tool call")
        return Verdict("escalate", "tool call (on_tool_call=escalate)")
    if not rule.has_scorer:
        return Verdict("accept", "no scorer")
    if scorer_error is not None:
        return Verdict("escalate", f"scorer error: {scorer_error}")
    if score is None:
        why = missing or "scorer returned no value"
        if rule.on_missing == "accept":
            return Verdict("accept", f"missing signal accepted: {why}")
        return Verdict("escalate", f"missing signal: {why}")
    threshold = rule.threshold
    assert threshold is not None, "config validation requires a threshold with a scorer"
    if score >= threshold:
        return Verdict("accept", f"score {score:.3f} >= threshold {threshold:g}")
    return Verdict("escalate", f"score {score:.3f} < threshold {threshold:g}")


def next_rung(attempts: Sequence[AttemptView], n_rungs: int) -> int | None:
    """The rung to call next, or None when the request is decided."""
    if not attempts:
        return 0
    last = attempts[-1]
    if last.decision == "accept":
        return None
    nxt = last.rung + 1
    return nxt if nxt < n_rungs else None


def conclude(attempts: Sequence[AttemptView], on_exhausted: OnExhausted) -> Conclusion:
    """Which attempt's answer to return once ``next_rung`` says the request is decided."""
    if attempts and attempts[-1].decision == "accept":
        return Conclusion(len(attempts) - 1, "accepted")
    if on_exhausted == "best":
        best: int | None = None
        for i, attempt in enumerate(attempts):
            if attempt.decision == "error":
                continue
            # Highest score wins; an unscored answer ranks below any scored one; ties go to
            # the later (stronger) rung.
            key = -1.0 if attempt.score is None else attempt.score
            if best is None:
                best = i
                continue
            best_score = attempts[best].score
            best_key = -1.0 if best_score is None else best_score
            if key >= best_key:
                best = i
        if best is not None:
            return Conclusion(best, "best")
    return Conclusion(None, "exhausted")
