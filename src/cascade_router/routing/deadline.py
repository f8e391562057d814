"""Skip rungs that cannot answer before the request's deadline, and bound the others by it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from cascade_router.routing.base import RouteContext, RoutingRule

if TYPE_CHECKING:
    from cascade_router.ladder import RungRuntime


class DeadlineRule(RoutingRule):
    """``{kind: deadline, deadline_s: 2}``: a rung whose recent latency (its ``quantile`` over its
    last answers in this process) exceeds what is left of the deadline is skipped, and a rung
    that is called gets what is left as its timeout. A request sets its own with
    ``invoke(..., deadline_s=...)``. Until a rung has ``min_samples`` answers it is not skipped
    (its timeout still applies)."""

    kind: Literal["deadline"] = "deadline"
    deadline_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """The deadline for requests that do not set their own; None: only theirs."""
    quantile: float = Field(default=0.9, gt=0, lt=1)
    """Which latency quantile estimates a rung's time."""
    min_samples: int = Field(default=10, ge=1, le=100_000)
    """Answers of a rung needed before its latency is estimated."""

    @property
    def uses_latencies(self) -> bool:
        return True

    def _deadline(self, ctx: RouteContext) -> float | None:
        return ctx.limits.deadline_s if ctx.limits.deadline_s is not None else self.deadline_s

    def skip(self, ctx: RouteContext, rung: RungRuntime) -> str | None:
        deadline = self._deadline(ctx)
        if deadline is None:
            return None
        left = deadline - ctx.elapsed()
        if left <= 0:
            return f"the deadline of {deadline:g} s has passed"
        latencies = ctx.latencies
        seen = latencies.quantile(rung.index, self.quantile, self.min_samples) if latencies else None
        if seen is None or seen[0] <= left:
            return None
        estimate, n = seen
        pct = round(self.quantile * 100)
        expected = f"expected {estimate:.2f} s (p{pct} of its last {n})"
        return f"{expected} > {left:.2f} s left of the deadline {deadline:g} s"

    def timeout(self, ctx: RouteContext) -> float | None:
        deadline = self._deadline(ctx)
        return None if deadline is None else max(0.001, deadline - ctx.elapsed())
