"""Spending limits: per request (``cost``) and per tenant, user or key over a period (``budget``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from cascade_router.catalog import capabilities
from cascade_router.errors import BudgetExceededError
from cascade_router.pricing import catalog_price
from cascade_router.routing.base import RouteContext, RoutingRule

if TYPE_CHECKING:
    from cascade_router.ladder import RungRuntime
    from cascade_router.shared_state import StateStore


def worst_case_usd(ctx: RouteContext, rung: RungRuntime, output_tokens: int | None) -> float | str:
    """The most a call of ``rung`` can cost for this request (its prompt, and its ``max_tokens``,
    else the rule's ``output_tokens``, else the model's longest answer in the catalog, at its
    price), or why it cannot be bounded."""
    price = rung.price or (catalog_price(rung.provider, rung.model) if rung.model else None)
    if price is None:
        return "no known price"
    prompt = ctx.prompt_tokens_bound()
    if price.output_per_mtok == 0:  # a free answer (a model of one's own): its length is moot
        return prompt * price.input_per_mtok / 1e6
    answer = rung.max_output_tokens if rung.max_output_tokens is not None else output_tokens
    if answer is None and rung.model:
        answer = capabilities(rung.provider, rung.model).max_output_tokens
    if answer is None:
        return "no max_tokens"
    return (prompt * price.input_per_mtok + answer * price.output_per_mtok) / 1e6


class CostRule(RoutingRule):
    """``{kind: cost, max_cost_usd: 0.05}``: before each rung, its worst-case cost (the prompt's
    tokens and its ``max_tokens`` at its price) is compared with what is left of the request's
    ``max_cost_usd`` after the attempts so far; a rung that could exceed it is skipped. A request
    sets its own limit with ``invoke(..., max_cost_usd=...)``. A rung with no known price, or no
    ``max_tokens``, no ``output_tokens`` here and no longest answer in the catalog, cannot be
    bounded and is skipped while a limit applies (a limit is a promise)."""

    kind: Literal["cost"] = "cost"
    max_cost_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """The limit for requests that do not set their own; None: only theirs."""
    output_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    """The answer's length assumed for rungs that state no ``max_tokens``; None: the model's
    longest answer in the catalog (``cascade_router.catalog``)."""

    def skip(self, ctx: RouteContext, rung: RungRuntime) -> str | None:
        limit = ctx.limits.max_cost_usd if ctx.limits.max_cost_usd is not None else self.max_cost_usd
        if limit is None:
            return None
        worst = worst_case_usd(ctx, rung, self.output_tokens)
        if isinstance(worst, str):
            return f"{worst}, so its cost cannot be bounded by max_cost_usd ${limit:g}"
        left = limit - ctx.spent_usd()
        if worst <= left:
            return None
        return f"worst-case cost ${worst:.4g} > ${max(left, 0.0):.4g} left of max_cost_usd ${limit:g}"


_PERIODS = {"hour": ("%Y%m%d%H", 3600.0), "day": ("%Y%m%d", 86_400.0), "month": ("%Y%m", 31 * 86_400.0)}


def budget_bucket(item: str, whose: Any, per: str) -> tuple[str, float]:
    """The store key that counts what ``whose`` (a value of metadata ``item``) spends in the
    current ``per`` period, and the key's time to live."""
    fmt, ttl = _PERIODS[per]
    return f"budget:{item}:{whose}:{time.strftime(fmt, time.gmtime())}", ttl


class BudgetRule(RoutingRule):
    """``{kind: budget, key: tenant, usd: 20, per: day}``: what the requests of one tenant (user,
    API key...: the value of ``key`` in the request's metadata) may spend per calendar hour, day
    or month (UTC). Before each rung its worst-case cost is reserved from the budget in one
    atomic step, and the request settles the reservation with what its calls cost once it ends,
    so concurrent requests (in this process, or in every process sharing a Redis ``store``)
    never spend more than the budget, unless a call costs more than its worst case (a judge's
    calls are not reserved). When the budget cannot cover a rung: ``over: cheaper`` skips it
    (a cheaper rung may still fit), ``over: raise`` ends the request with
    ``BudgetExceededError``. Requests without ``key`` in their metadata are not counted."""

    kind: Literal["budget"] = "budget"
    key: str = Field(min_length=1)
    """The metadata item that names whose budget it is (``tenant``, ``user``...); a leading
    ``metadata.`` is allowed."""
    usd: float = Field(gt=0, allow_inf_nan=False)
    """The budget in US dollars per ``per``."""
    per: Literal["hour", "day", "month"] = "day"
    """The period, in UTC calendar units: a day's budget starts again at midnight UTC."""
    over: Literal["cheaper", "raise"] = "cheaper"
    """What happens when the budget cannot cover a rung."""
    store: str | None = None
    """Where the spending is counted: None (this process) or ``redis://...`` (every process
    sharing it)."""
    output_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    """The answer's length assumed for rungs that state no ``max_tokens``; None: such rungs
    cannot be bounded, and are skipped for requests under a budget."""

    _store: StateStore | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _store_opens(self) -> BudgetRule:
        from cascade_router.shared_state import open_store

        self._store = open_store(self.store, field="store")
        return self

    @property
    def reserves(self) -> bool:
        return True

    @property
    def _item(self) -> str:
        return self.key.removeprefix("metadata.")

    def _bucket(self, whose: Any, per: str) -> tuple[str, float]:
        return budget_bucket(self._item, whose, per)

    def _held(self, ctx: RouteContext) -> list[tuple[str, int, float]]:
        held: list[tuple[str, int, float]] = ctx.memo.setdefault(id(self), [])
        return held

    def limit(self, ctx: RouteContext) -> tuple[Any, float, str] | None:
        """``(whose, usd, per)`` of the budget this request counts against, or None. The
        server's per-key budgets override it to read each key's own amount."""
        whose = ctx.metadata.get(self._item)
        return None if whose is None else (whose, self.usd, self.per)

    def skip(self, ctx: RouteContext, rung: RungRuntime) -> str | None:
        found = self.limit(ctx)
        if found is None:
            return None
        whose, usd, per = found
        label = f"of {self._item} {whose!r} (${usd:g} a {per})"
        worst = worst_case_usd(ctx, rung, self.output_tokens)
        if isinstance(worst, str):
            return self._over(label, f"{worst}, so its cost cannot be held from the budget")
        bucket, ttl = self._bucket(whose, per)
        assert self._store is not None
        if self._store.add_float(bucket, worst, ttl=ttl, limit=usd) is None:
            return self._over(label, f"its worst-case cost ${worst:.4g} does not fit in what is left")
        self._held(ctx).append((bucket, rung.index, worst))
        return None

    def _over(self, label: str, why: str) -> str:
        if self.over == "raise":
            raise BudgetExceededError(label, why)
        return f"budget {label}: {why}"

    def finish(self, ctx: RouteContext) -> None:
        held: list[tuple[str, int, float]] | None = ctx.memo.pop(id(self), None)
        if not held or self._store is None:
            return
        # What each rung's calls cost, against what was held for them; a call whose cost is
        # unknown keeps its hold (the provider may have billed it).
        spent: dict[int, float | None] = {}
        for attempt in ctx.attempts:
            if attempt.decision != "skipped":
                cost, before = attempt.total_cost_usd, spent.get(attempt.rung, 0.0)
                spent[attempt.rung] = None if cost is None or before is None else before + cost
        reserved: dict[tuple[str, int], float] = {}
        for bucket, rung, amount in held:
            reserved[bucket, rung] = reserved.get((bucket, rung), 0.0) + amount
        for (bucket, rung), amount in reserved.items():
            actual = spent.pop(rung, 0.0)  # a rung's cost settles against its first bucket
            if actual is not None and actual != amount:
                self._store.add_float(bucket, actual - amount)
