"""The chain of routing rules a ladder applies to each request, and what they decided."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cascade_router.routing.base import RouteContext, RoutingRule, RungLatencies

if TYPE_CHECKING:
    from cascade_router.ladder import RungRuntime

log = logging.getLogger("cascade_router.routing")


class Router:
    """A ladder's routing rules, in order. The first rule that refuses a request, or skips a
    rung, decides (its reason is recorded); the others are not asked."""

    def __init__(self, rules: Sequence[RoutingRule], rungs: Sequence[RungRuntime]) -> None:
        self.rules = list(rules)
        names = [r.name for r in rungs]
        for i, rule in enumerate(self.rules):
            rule.check_rungs(names, f"routing[{i}]")
        self._ordered = [r for r in self.rules if not r.reserves] + [r for r in self.rules if r.reserves]
        # Only the rules that implement a hook are asked at it: the hooks run on every request.
        self._refusing = _implementing(self.rules, "refusal")
        self._bounding = _implementing(self.rules, "timeout")
        self._learning = _implementing(self.rules, "learn")
        self._finishing = _implementing(self.rules, "finish")
        self._labelled = _implementing(self.rules, "feedback")
        self.learns = bool(self._labelled)
        """Whether a rule learns from labelled feedback (``feedback``)."""
        self.latencies = RungLatencies(len(rungs))
        """Each rung's recent latencies in this ladder (what deadlines estimate from)."""
        self.needs_latencies = any(rule.uses_latencies for rule in self.rules)
        """Whether a rule reads ``latencies`` (else they are not recorded)."""
        self.refuses = bool(self._refusing)
        """Whether a rule may refuse a request (``refusal``)."""
        self.bounds_calls = bool(self._bounding)
        """Whether a rule may bound a rung's timeout (``timeout``)."""
        self.needs_finish = bool(self._finishing or self._learning or self.needs_latencies)
        """Whether a finished request has anything to teach or settle."""

    def refusal(self, ctx: RouteContext) -> tuple[str, str] | None:
        """(rule kind, why) when a rule refuses the request."""
        for rule in self._refusing:
            why = rule.refusal(ctx)
            if why is not None:
                return rule.kind, why
        return None

    def skip(self, ctx: RouteContext, rung: RungRuntime) -> tuple[str, str] | None:
        """(rule kind, why) when a rule rules ``rung`` out for this request. Rules that hold
        something for a rung they let through (budgets) are asked last."""
        for rule in self._ordered:
            why = rule.skip(ctx, rung)
            if why is not None:
                return rule.kind, why
        return None

    def finish(self, ctx: RouteContext) -> None:
        for rule in self._finishing:
            try:
                rule.finish(ctx)
            except Exception:  # settling is bookkeeping: it must never break the request
                log.warning("routing rule %s failed to settle a request", rule.kind, exc_info=True)

    def feedback(self, request_id: str, good: bool, rung: int | None = None) -> None:
        """Pass a request's label to the rules that learn from labels (the pre-router)."""
        for rule in self._labelled:
            try:
                rule.feedback(request_id, good, rung)
            except Exception:  # learning is a bonus: it must never break the caller
                log.warning("routing rule %s failed to learn from feedback", rule.kind, exc_info=True)

    def timeout(self, ctx: RouteContext) -> float | None:
        """The tightest bound the rules put on a rung called now (a deadline's remainder)."""
        bounds = [t for rule in self._bounding if (t := rule.timeout(ctx)) is not None]
        return min(bounds) if bounds else None

    def learn(self, ctx: RouteContext, rung: RungRuntime, error_class: str | None) -> None:
        for rule in self._learning:
            try:
                rule.learn(ctx, rung, error_class)
            except Exception:  # learning is a bonus: it must never break the request
                log.warning("routing rule %s failed to learn from an error", rule.kind, exc_info=True)


def _implementing(rules: Sequence[RoutingRule], hook: str) -> list[RoutingRule]:
    base = getattr(RoutingRule, hook)
    return [rule for rule in rules if getattr(type(rule), hook) is not base]
