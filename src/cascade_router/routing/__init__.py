"""Routing before the cascade: rules that refuse a request or rule rungs out for it.

Built-in kinds, selectable by ``kind`` in configuration: ``budget``, ``context_length``,
``cost``, ``deadline``, ``domain``, ``pre_router``; ``register_rule`` adds a kind. Each skipped
rung is an attempt with decision ``skipped`` and the rule's reason (``skipped: context 41,203 +
max_tokens 1,024 tokens > window 32,768``), in the result, the spans and the decision log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from cascade_router.errors import ConfigError
from cascade_router.routing.base import RequestLimits, RouteContext, RoutingRule, RungLatencies, count_tokens
from cascade_router.routing.budget import BudgetRule, CostRule
from cascade_router.routing.context_length import ContextLengthRule
from cascade_router.routing.deadline import DeadlineRule
from cascade_router.routing.domain import DomainRule
from cascade_router.routing.prerouter import PreRouterAdaptation, PreRouterRule
from cascade_router.routing.router import Router

RULE_KINDS: dict[str, type[RoutingRule]] = {
    "budget": BudgetRule,
    "context_length": ContextLengthRule,
    "cost": CostRule,
    "deadline": DeadlineRule,
    "domain": DomainRule,
    "pre_router": PreRouterRule,
}


def register_rule(kind: str, cls: type[RoutingRule]) -> None:
    """Make ``{kind: <kind>, ...}`` in configuration build ``cls``."""
    RULE_KINDS[kind] = cls


def parse_rules(value: Any, *, field: str = "routing") -> list[RoutingRule]:
    """Rules from configuration: a list of ``RoutingRule`` objects and ``{kind: ...}`` mappings."""
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ConfigError(field, f"expected a list of rules, got {type(value).__name__}")
    rules: list[RoutingRule] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if isinstance(item, RoutingRule):
            rules.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ConfigError(where, f"expected a rule or a {{kind: ...}} mapping, got {type(item).__name__}")
        spec = dict(item)
        kind = spec.get("kind")
        cls = RULE_KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ConfigError(f"{where}.kind", f"unknown rule kind {kind!r}; known: {sorted(RULE_KINDS)}")
        try:
            rules.append(cls(**spec))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"{where}.{loc}" if loc else where, message) from None
    return rules


__all__ = [
    "RULE_KINDS",
    "BudgetRule",
    "ContextLengthRule",
    "CostRule",
    "DeadlineRule",
    "DomainRule",
    "PreRouterAdaptation",
    "PreRouterRule",
    "RequestLimits",
    "RouteContext",
    "Router",
    "RoutingRule",
    "RungLatencies",
    "count_tokens",
    "parse_rules",
    "register_rule",
]
