"""Per-key limits, counted in the shared state store so that every server process agrees.

- Rate: requests a minute, a counter per key and calendar minute (``incr`` with expiry: one
  round trip to Redis). Over the limit: 429 with ``Retry-After`` until the next minute.
- Budget: a ``BudgetRule`` whose amount and period are the key's own. Before each rung its
  worst-case cost is reserved atomically and the request settles what it spent, so concurrent
  requests on every process never spend past the budget.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal

from cascade_router.routing.budget import BudgetRule, budget_bucket
from cascade_router.server.keys import ApiKey

if TYPE_CHECKING:
    from cascade_router.routing.base import RouteContext
    from cascade_router.shared_state import StateStore

KEY_ITEM = "api_key"
"""The request metadata item naming the key a request came with (its id, not the key)."""


class KeyBudgetRule(BudgetRule):
    """The server's per-key budget: ``usd`` and ``per`` come from the request's key."""

    kind: Literal["key_budget"] = "key_budget"  # type: ignore[assignment]
    key: str = KEY_ITEM
    usd: float = 1.0  # each key's own amount replaces it (``limit``)
    over: Literal["cheaper", "raise"] = "raise"

    def limit(self, ctx: RouteContext) -> tuple[Any, float, str] | None:
        whose = ctx.metadata.get(KEY_ITEM)
        usd = ctx.metadata.get("api_key_budget_usd")
        if whose is None or usd is None:
            return None
        return whose, float(usd), str(ctx.metadata.get("api_key_budget_per", "day"))


def key_metadata(key: ApiKey) -> dict[str, Any]:
    """What the routing rules read about the key (its id, never the key)."""
    meta: dict[str, Any] = {KEY_ITEM: key.id}
    if key.budget_usd is not None:
        meta["api_key_budget_usd"] = key.budget_usd
        meta["api_key_budget_per"] = key.budget_per
    return meta


def take_rate(store: StateStore, key: ApiKey) -> float | None:
    """Count one request against the key's rate; the seconds to wait when it is over, else None."""
    if key.rpm is None:
        return None
    now = time.time()
    minute = int(now // 60)
    count = store.incr(f"rate:{key.id}:{minute}", ttl=61)
    if count <= key.rpm:
        return None
    return max(1.0, math.ceil((minute + 1) * 60 - now))


def budget_spent(store: StateStore, key: ApiKey) -> float:
    """What the key has spent (and holds) in its current budget period."""
    bucket, _ = budget_bucket(KEY_ITEM, key.id, key.budget_per)
    (value,) = store.get_many([bucket])
    return float(value or 0.0)


def seconds_to_next_period(per: str, now: float | None = None) -> int:
    """Seconds until the budget period (UTC calendar hour, day or month) starts again."""
    import calendar
    from datetime import UTC, datetime, timedelta

    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if per == "hour":
        start = t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    elif per == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    else:
        days = calendar.monthrange(t.year, t.month)[1]
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=days)
    return max(1, math.ceil((start - t).total_seconds()))
