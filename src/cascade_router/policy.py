"""The escalation policy: pure, synchronous, free of I/O.

Every driver (sync, async, streaming, LangChain, the agent middleware) asks these functions
what to do and does it. Keeping the decisions here, away from the code that calls models, is
what guarantees that ``invoke`` and ``astream`` cannot disagree about who answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from cascade_router.failures import RAISED_AT_ONCE, ErrorClass

Decision = Literal["accept", "escalate", "error", "abandoned", "skipped"]
"""``abandoned``: the call was cut off by the caller (a cancellation, a closed stream) before a
decision could be made; recorded so that the log shows the rung ran. ``skipped``: the rung was
not called (its circuit breaker is open); recorded so that the log says why."""
OnMissing = Literal["escalate", "accept"]
OnToolCall = Literal["accept", "score", "escalate"]
OnExhausted = Literal["raise", "best"]
OnPolicyError = Literal["raise", "escalate"]
Outcome = Literal["accepted", "best", "exhausted", "raised"]
"""``raised``: a rung's error ended the request (an auth or bad-request error, a content-policy
refusal): the caller gets that error itself, not a later rung's."""


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
    @property
    def max_retries(self) -> int: ...
    @property
    def on_policy_error(self) -> OnPolicyError: ...


class AttemptView(Protocol):
    """What the policy needs to know about an attempt that already happened."""

    @property
    def rung(self) -> int: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def score(self) -> float | None: ...
    @property
    def evidence(self) -> Evidence: ...


@dataclass(frozen=True, slots=True)
class Evidence:
    """What happened during one attempt: everything ``decide`` reads.

    Kept on every attempt, so that offline evaluation can ask the same policy again under
    other thresholds without calling a model.
    """

    error: BaseException | None = None
    """The rung's error (the call failed; there is no answer)."""
    invalid: str | None = None
    """Why the answer is unusable whatever its score (empty, malformed tool call...)."""
    malformed: bool = False
    """The answer's structure is broken (structured output that does not parse, a malformed tool
    call): unusable even from the final rung, unlike a merely empty answer."""
    is_tool_call: bool = False
    score: float | None = None
    """The scorer's value in [0, 1]; None when there is none."""
    missing: str | None = None
    """Why the scorer had no signal (no logprobs returned...)."""
    scorer_error: str | None = None
    """The scorer raised, timed out or returned something that is not a probability."""
    error_class: ErrorClass | None = None
    """The class of ``error`` (``cascade_router.failures``): what it means for the request."""
    retry_in: float | None = None
    """Seconds after which the same rung is tried again (``retry_delay``); None: no retry."""
    halt: bool = False
    """The error ends the request (``halts``): it is raised, no other rung is tried."""
    aborted: str | None = None
    """The answer was abandoned while it was generated (``early_abort``): why. It escalates."""

    @property
    def usable(self) -> bool:
        """Whether the attempt produced an answer that may be returned at all."""
        return self.error is None and self.invalid is None


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
    before its first chunk. (A final rung's streamed answer that turns out malformed fails the
    request at its end; the caller has seen the chunks, as with a bare model.)
    """
    return final or (not rule.has_scorer and not rule.validate_output)


PrefixAction = Literal["abort", "hedge"]
"""What a prefix check of a streamed scored rung calls for: ``abort`` the rung (its answer will
not be accepted) or ``hedge`` it (start the next rung beside it)."""


def prefix_action(
    *,
    score: float | None,
    hopeless: str | None,
    threshold: float,
    chunks: int,
    min_tokens: int,
    margin: float,
    hedge_margin: float | None = None,
) -> tuple[PrefixAction, str] | None:
    """The ``early_abort`` rule, and the ``low_prefix`` hedge rule, on one prefix check.

    Abort when the scorer calls the answer hopeless (at once), or after ``min_tokens`` chunks
    when the prefix score is below ``threshold - margin``; hedge when it is below ``threshold -
    hedge_margin`` (a smaller margin: the band where the rung is doubtful, not lost). The reason
    names the numbers, for the attempt's record."""
    after = f"(after {chunks} chunks)"
    if hopeless is not None:
        return "abort", f"{hopeless} {after}"
    if chunks < min_tokens or score is None:
        return None
    if score < threshold - margin:
        return "abort", f"prefix score {score:.3f} < threshold {threshold:g} - margin {margin:g} {after}"
    if hedge_margin is not None and score < threshold - hedge_margin:
        why = f"prefix score {score:.3f} < threshold {threshold:g} - prefix_margin {hedge_margin:g}"
        return "hedge", f"{why} {after}"
    return None


def halts(rule: RungRule, error_class: ErrorClass) -> bool:
    """Whether a rung's error ends the request instead of falling back: auth and bad-request
    errors always (another rung would fail alike, or hide the mistake behind its answer), a
    content-policy refusal unless the ladder routes around it (``on_policy_error: escalate``)."""
    return error_class in RAISED_AT_ONCE or (error_class == "policy" and rule.on_policy_error == "raise")


def retry_delay(
    rule: RungRule,
    error_class: ErrorClass,
    *,
    tries: int,
    retry_after: float | None,
    max_wait: float,
    base: float = 0.25,
    cap: float = 8.0,
) -> float | None:
    """The longest wait before trying the same rung again, or None to move on.

    Only a retryable error (``cascade_router.failures``) is retried, at most ``max_retries``
    times per rung and request. The wait is exponential in ``tries`` (the failed tries so far),
    ``base * 2**(tries-1)`` capped at ``cap``; the driver draws the actual wait between half of it
    and it (equal jitter, so that many clients do not retry in step) and never waits less than the
    provider's ``Retry-After``. A provider asking for more than ``max_wait`` seconds gets the
    next rung instead: waiting that long is worse than a fallback.
    """
    if error_class != "retryable" or tries > rule.max_retries:
        return None
    if retry_after is not None and retry_after > max_wait:
        return None
    return min(cap, base * 2.0 ** max(0, tries - 1))


def should_score(rule: RungRule, *, is_tool_call: bool) -> bool:
    """Whether to run the rung's scorer on an answer that passed the validity check."""
    if not rule.has_scorer:
        return False
    return not is_tool_call or rule.on_tool_call == "score"


def decide(rule: RungRule, evidence: Evidence, *, final: bool) -> Verdict:
    """The decision for one attempt, from what happened during it.

    Order matters: an error beats everything; a final rung accepts any answer whose structure
    is intact; an invalid answer is never accepted elsewhere; then the tool-call policy; then
    the score.
    """
    if evidence.error is not None:
        kind = f" ({evidence.error_class})" if evidence.error_class is not None else ""
        then = ""
        if evidence.halt:
            then = "; raised, no other rung tried"
        elif evidence.retry_in is not None:
            then = f"; retry in {evidence.retry_in:.2f} s"
        return Verdict("error", f"error{kind}: {type(evidence.error).__name__}{then}")
    if evidence.aborted is not None:
        return Verdict("escalate", f"early abort: {evidence.aborted}")
    if final and not evidence.malformed:
        return Verdict("accept", "final rung")
    if evidence.invalid is not None:
        return Verdict("escalate", f"invalid: {evidence.invalid}")
    if evidence.is_tool_call and rule.on_tool_call != "score":
        if rule.on_tool_call == "accept":
            return Verdict("accept", "valid tool call")
        return Verdict("escalate", "tool call (on_tool_call=escalate)")
    if not rule.has_scorer:
        return Verdict("accept", "no scorer")
    if evidence.scorer_error is not None:
        return Verdict("escalate", f"scorer error: {evidence.scorer_error}")
    score = evidence.score
    if score is None:
        why = evidence.missing or "scorer returned no value"
        if rule.on_missing == "accept":
            return Verdict("accept", f"missing signal accepted: {why}")
        return Verdict("escalate", f"missing signal: {why}")
    threshold = rule.threshold
    assert threshold is not None, "config validation requires a threshold with a scorer"
    if score >= threshold:
        return Verdict("accept", f"score {score:.3f} >= threshold {threshold:g}")
    return Verdict("escalate", f"score {score:.3f} < threshold {threshold:g}")


def next_rung(attempts: Sequence[AttemptView], n_rungs: int, start_at: int = 0) -> int | None:
    """The rung to call next, or None when the request is decided. ``start_at``: the first rung
    this request may use (a per-request override; the rungs below it are skipped)."""
    if not attempts:
        return start_at if start_at < n_rungs else None
    last = attempts[-1]
    if last.decision == "accept":
        return None
    if last.decision == "error":
        if last.evidence.halt:
            return None
        if last.evidence.retry_in is not None:
            return last.rung
    nxt = last.rung + 1
    return nxt if nxt < n_rungs else None


def conclude(attempts: Sequence[AttemptView], on_exhausted: OnExhausted) -> Conclusion:
    """Which attempt's answer to return once ``next_rung`` says the request is decided."""
    if attempts and attempts[-1].decision == "accept":
        return Conclusion(len(attempts) - 1, "accepted")
    if attempts and attempts[-1].decision == "error" and attempts[-1].evidence.halt:
        return Conclusion(None, "raised")
    if on_exhausted == "best":
        best: int | None = None
        for i, attempt in enumerate(attempts):
            # An error has no answer and an invalid answer (empty, malformed) is never the
            # best one: with nothing usable the ladder is exhausted.
            if attempt.decision in ("error", "abandoned", "skipped") or not attempt.evidence.usable:
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
