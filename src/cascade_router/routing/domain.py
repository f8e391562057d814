"""Rules over what a request is about: keep it to approved rungs, start it higher, or refuse it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from cascade_router.errors import ConfigError
from cascade_router.routing.base import RouteContext, RoutingRule

if TYPE_CHECKING:
    from cascade_router.ladder import RungRuntime


class DomainRule(RoutingRule):
    """``{kind: domain, name: medical, keywords: [...], only: [strong]}``: when a request matches
    (any keyword as a whole word, any ``patterns`` regex, every ``metadata`` item, or the
    ``classifier``), either ``only`` the named rungs may answer it, or it ``start_at`` a named
    rung, or it is refused (``refuse``: the message the caller gets, in a
    ``RequestRefusedError``). Exactly one of the three. Also the rule for safety postures: a
    keyword or classifier set for unsafe prompts that sends them to a stricter model or refuses.

    The offline default is keywords and patterns, which need no download. For a real
    classifier (a moderation model, a topic classifier) pass ``classifier``: any callable from
    the request's text to a bool (or to a score, matched when >= ``min_score``), or a LangChain
    runnable (its ``invoke`` is called)."""

    kind: Literal["domain"] = "domain"
    name: str = Field(min_length=1)
    """Shown in the skipped attempts' reasons and in refusals."""
    keywords: list[str] = Field(default_factory=list)
    """Matched as whole words, ignoring case."""
    patterns: list[str] = Field(default_factory=list)
    """Regular expressions searched in the request's text (Python syntax, case-insensitive)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Matched when the request's metadata has every one of these items."""
    classifier: Any = None
    """A callable (or LangChain runnable) over the request's text."""
    min_score: float = Field(default=0.5, ge=0, le=1)
    """A classifier that returns a number matches at or above this."""
    only: list[str] | None = None
    """The rungs (by name) that may answer a matching request."""
    start_at: str | None = None
    """The rung (by name) a matching request starts at."""
    refuse: str | None = None
    """Refuse a matching request with this message."""

    _compiled: re.Pattern[str] | None = PrivateAttr(default=None)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_action(self) -> DomainRule:
        actions = [a for a in ("only", "start_at", "refuse") if getattr(self, a) is not None]
        if len(actions) != 1:
            raise ValueError(f"needs exactly one of only, start_at, refuse; got {actions or 'none'}")
        if not (self.keywords or self.patterns or self.metadata or self.classifier is not None):
            raise ValueError("matches nothing: give keywords, patterns, metadata or a classifier")
        if self.classifier is not None and not (
            callable(self.classifier) or hasattr(self.classifier, "invoke")
        ):
            raise ValueError("classifier must be a callable or a runnable")
        return self

    def model_post_init(self, context: Any, /) -> None:
        parts = [rf"\b{re.escape(k)}\b" for k in self.keywords] + [f"(?:{p})" for p in self.patterns]
        self._compiled = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def check_rungs(self, names: Sequence[str], field: str) -> None:
        for ref, where in [*((n, "only") for n in self.only or ()), (self.start_at, "start_at")]:
            if ref is not None and ref not in names:
                raise ConfigError(f"{field}.{where}", f"no rung named {ref!r}; the rungs are {list(names)}")

    def matches(self, ctx: RouteContext) -> bool:
        """Whether the request is in this domain (worked out once per request)."""
        key = id(self)
        if key not in ctx.memo:
            ctx.memo[key] = self._matches(ctx)
        return bool(ctx.memo[key])

    def _matches(self, ctx: RouteContext) -> bool:
        if self._compiled is not None and self._compiled.search(ctx.text):
            return True
        if self.metadata and _has_items(ctx.metadata, self.metadata):
            return True
        if self.classifier is not None:
            call: Callable[[str], Any] = getattr(self.classifier, "invoke", self.classifier)
            verdict = call(ctx.text)
            if isinstance(verdict, bool):
                return verdict
            if isinstance(verdict, int | float):
                return float(verdict) >= self.min_score
            raise TypeError(
                f"the {self.name!r} classifier returned {type(verdict).__name__}, not a bool or score"
            )
        return False

    def refusal(self, ctx: RouteContext) -> str | None:
        return self.refuse if self.refuse is not None and self.matches(ctx) else None

    def skip(self, ctx: RouteContext, rung: RungRuntime) -> str | None:
        if self.refuse is not None or not self.matches(ctx):
            return None
        if self.only is not None and rung.name not in self.only:
            return f"domain {self.name!r} allows only {self.only}"
        if self.start_at is not None:
            start = next(r.index for r in ctx.rungs if r.name == self.start_at)
            if rung.index < start:
                return f"domain {self.name!r} starts at {self.start_at!r}"
        return None


def _has_items(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    return all(k in have and have[k] == v for k, v in want.items())
