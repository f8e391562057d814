"""Records of what happened: one ``Attempt`` per rung call, one ``Result`` per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cascade_router.model_io import ModelOutput, Usage
from cascade_router.policy import Decision, Evidence, Outcome


@dataclass(slots=True)
class Attempt:
    """One rung call and the decision made about its answer."""

    rung: int
    name: str
    provider: str | None
    model: str | None
    """The model that answered: the provider's name for it when it reported one."""
    decision: Decision
    reason: str
    """Why the decision was made, e.g. ``score 0.612 < threshold 0.8`` or ``error: RateLimitError``."""
    threshold: float | None
    score: float | None = None
    method: str | None = None
    """How the score was computed: logprob, judge, validity, learned, callable."""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """``ExceptionType: message`` of the rung's error (or of the scorer's, which escalates)."""
    error_class: str | None = None
    """The class of the rung's error (``cascade_router.failures``): retryable, timeout,
    context_length, policy, auth, bad_request or other; None without an error."""
    exception: BaseException | None = field(default=None, repr=False)
    usage: Usage | None = None
    """Tokens of the model call itself; None when the provider reported none."""
    cost_usd: float | None = 0.0
    """Cost of the model call; None when unknown (no usage, no price for the model, or a call
    that failed or was cut off after it may have reached the provider)."""
    scorer_usage: Usage = field(default_factory=Usage)
    """Tokens the scorer spent (judge calls)."""
    scorer_cost_usd: float | None = 0.0
    latency_s: float = 0.0
    """From the call to the decision, scoring included."""
    ttft_s: float | None = None
    """Time to first token, for a rung that streamed to the caller."""
    output: ModelOutput | None = field(default=None, repr=False)
    evidence: Evidence = field(default_factory=Evidence, repr=False)
    """What the policy decided from (score, missing, invalid, error...), so an evaluation can
    ask the same policy again under other thresholds."""
    shadow: bool = False
    """Called off the request path by shadow sampling; not part of the answer or its cost."""

    @property
    def total_cost_usd(self) -> float | None:
        if self.cost_usd is None or self.scorer_cost_usd is None:
            return None
        return self.cost_usd + self.scorer_cost_usd

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form used in ``response_metadata["cascade"]["attempts"]``."""
        usage = self.usage or Usage()
        return {
            "rung": self.rung,
            "name": self.name,
            "provider": self.provider,
            "model": self.model,
            "score": self.score,
            "method": self.method,
            "threshold": self.threshold,
            "decision": self.decision,
            "reason": self.reason,
            "error": self.error,
            "error_class": self.error_class,
            "input_tokens": usage.input_tokens if self.usage is not None else None,
            "output_tokens": usage.output_tokens if self.usage is not None else None,
            "cost_usd": self.cost_usd,
            "scorer_input_tokens": self.scorer_usage.input_tokens,
            "scorer_output_tokens": self.scorer_usage.output_tokens,
            "scorer_cost_usd": self.scorer_cost_usd,
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            **({"shadow": True} if self.shadow else {}),
        }


@dataclass(slots=True)
class Result:
    """The answer to one request and how it was reached."""

    attempts: list[Attempt]
    accepted: int
    """Index in ``attempts`` of the answer returned."""
    outcome: Outcome
    """``accepted``, or ``best`` when no rung was accepted and the best-scored answer is returned."""
    request_id: str = ""
    """Identifies the request in the decision log (``record_feedback``) and in traces."""
    trace_id: str | None = None
    """The OpenTelemetry trace id, when the request was traced."""

    @property
    def answered_by(self) -> Attempt:
        return self.attempts[self.accepted]

    @property
    def output(self) -> ModelOutput:
        output = self.answered_by.output
        assert output is not None, "an accepted attempt always has an output"
        return output

    @property
    def usage(self) -> Usage:
        """Tokens of every attempt and every scorer call, not only of the answer."""
        total = Usage()
        for attempt in self.attempts:
            if attempt.usage is not None:
                total = total + attempt.usage
            total = total + attempt.scorer_usage
        return total

    @property
    def cost_usd(self) -> float | None:
        """Cost of every attempt and scorer call; None when any part of it is unknown."""
        total = 0.0
        for attempt in self.attempts:
            cost = attempt.total_cost_usd
            if cost is None:
                return None
            total += cost
        return total

    @property
    def cost_at_least_usd(self) -> float:
        """The known part of the cost: what ``cost_usd`` is when every part is known, a lower
        bound when some attempt's cost is unknown (a timed-out call the provider may bill)."""
        total = 0.0
        for attempt in self.attempts:
            total += attempt.cost_usd or 0.0
            total += attempt.scorer_cost_usd or 0.0
        return total

    def to_dict(self) -> dict[str, Any]:
        """The dict put in ``response_metadata["cascade"]`` (and the decision log)."""
        answered = self.answered_by
        return {
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "answered_by": {"rung": answered.rung, "name": answered.name, "model": answered.model},
            "outcome": self.outcome,
            "attempts": [a.to_dict() for a in self.attempts],
            "cost_usd": self.cost_usd,
            "cost_usd_at_least": self.cost_at_least_usd,
        }
