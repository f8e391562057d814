"""Summaries of decision-log records: who answers, how often the ladder escalates, what it costs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LogSummary:
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    answered_by: Counter[str] = field(default_factory=Counter)
    """Requests answered per rung name."""
    escalated: int = 0
    """Requests that needed more than their first rung."""
    cost_usd: float = 0.0
    unpriced: int = 0
    """Requests whose cost is unknown (a model the price catalog does not know)."""
    calls: Counter[str] = field(default_factory=Counter)
    """Rung calls per model."""
    errors: Counter[str] = field(default_factory=Counter)
    """Rung calls that failed, per model."""
    with_feedback: int = 0

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.requests if self.requests else 0.0

    def error_rate(self, model: str) -> float:
        return self.errors[model] / self.calls[model] if self.calls[model] else 0.0


def summarize(records: Iterable[Mapping[str, Any]]) -> LogSummary:
    s = LogSummary()
    for r in records:
        s.requests += 1
        s.outcomes[r["outcome"]] += 1
        if r.get("answered_name") is not None:
            s.answered_by[r["answered_name"]] += 1
        # Shadow calls (made for the log, off the request path) are not the request's.
        attempts = [a for a in r.get("attempts") or [] if not a.get("shadow")]
        if len(attempts) > 1:
            s.escalated += 1
        if r.get("cost_usd") is None:
            s.unpriced += 1
        else:
            s.cost_usd += r["cost_usd"]
        for a in attempts:
            model = a.get("model") or a.get("name") or "?"
            s.calls[model] += 1
            if a.get("decision") == "error":
                s.errors[model] += 1
        if r.get("feedback"):
            s.with_feedback += 1
    return s
