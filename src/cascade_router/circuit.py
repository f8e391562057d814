"""Circuit breakers: stop calling a rung that keeps failing, and try it again now and then.

```
            N consecutive failures, or a failure rate over the window
  closed ─────────────────────────────────────────────────────────────► open
    ▲                                                                  │ cooldown passed
    │ the probe succeeds                                               ▼
    └────────────────────────────────────────────────────────────── half-open
                        the probe fails: open again                 (one probe call at a time;
                                                                     other requests skip)
```

One breaker per (provider, model, endpoint), so two ladders over the same dead endpoint share
what they learned. Its state lives in a ``StateStore``: in-process by default, Redis when several
workers must agree (``circuit_breaker: {store: "redis://..."}``). A rung whose breaker is open
is not called: the request records a ``skipped`` attempt ("circuit open") and goes on up.

Only failures that say something about the endpoint count: retryable errors (connection
errors, 429, 5xx), the cascade's own timeouts, and unclassified errors. A bad request, a
content-policy refusal or a prompt too long for the window is the request's fault and counts
as neither a failure nor a success. A low-scored answer is a success: the endpoint works.

A store that cannot be reached never fails a request: the breaker then lets every call
through (and warns once), as if it were closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cascade_router.failures import ErrorClass
from cascade_router.shared_state import StateStore, open_store

log = logging.getLogger("cascade_router.circuit")

Gate = Literal["closed", "probe", "open"]
"""What a breaker says about the next call: go ahead, go ahead as the single probe, skip."""

COUNTED: frozenset[str] = frozenset({"retryable", "timeout", "other"})
"""Error classes that count as the endpoint failing."""

_BUCKETS = 6


class CircuitBreakerSettings(BaseModel):
    """When a rung's breaker opens and for how long (``LadderSettings.circuit_breaker``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    failures: int = Field(default=5, ge=1, le=10_000)
    """Consecutive failed calls that open the breaker."""
    failure_rate: float | None = Field(default=0.5, gt=0, le=1)
    """Open it too when at least this share of the calls in ``window_s`` failed (with at least
    ``min_calls`` calls in the window): an endpoint failing every other call. None: off."""
    window_s: float = Field(default=60.0, gt=0, le=86_400)
    """The window of the failure rate, in seconds."""
    min_calls: int = Field(default=10, ge=1)
    """Calls in the window below which the failure rate is not judged."""
    cooldown_s: float = Field(default=30.0, gt=0, le=86_400)
    """Seconds an open breaker skips the rung before a single probe call is let through."""
    store: str | None = None
    """Where the state lives: None (this process) or a Redis URL (``redis://host:6379/0``)
    shared by every process and machine using it."""


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A breaker as ``cascade-router health`` shows it."""

    key: str
    state: Literal["closed", "open", "half-open"]
    consecutive_failures: int
    window_calls: int
    window_failures: int
    reopens_in_s: float | None
    """Seconds until a probe is let through, for an open breaker."""


class CircuitBreakers:
    """The breakers of one ladder's rungs, over a shared store."""

    def __init__(self, settings: CircuitBreakerSettings, keys: Sequence[str]) -> None:
        self.settings = settings
        self.keys = tuple(keys)
        """One key per rung: ``provider|model|endpoint``."""
        self.store: StateStore = open_store(settings.store, field="circuit_breaker.store")
        self._warned = False

    # The store is shared, so times must be wall-clock (every process agrees on them).
    def _now(self) -> float:
        return time.time()

    def _names(self, rung: int) -> tuple[str, str, str]:
        base = f"cb:{self.keys[rung]}"
        return f"{base}:open_until", f"{base}:consecutive", f"{base}:probe"

    def _bucket_keys(self, rung: int, now: float) -> list[tuple[str, str]]:
        width = self.settings.window_s / _BUCKETS
        current = int(now // width)
        base = f"cb:{self.keys[rung]}"
        return [
            (f"{base}:calls:{b}", f"{base}:fails:{b}") for b in range(current - _BUCKETS + 1, current + 1)
        ]

    def _failed_store(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("circuit breaker store unreachable; breakers let every call through: %s", exc)

    def gate(self, rung: int) -> Gate:
        """Whether to call rung ``rung`` now."""
        open_until_key, _, probe_key = self._names(rung)
        try:
            (value,) = self.store.get_many([open_until_key])
            if value is None:
                return "closed"
            if self._now() < float(value):
                return "open"
            # Cooldown over: one caller (in any process) gets the probe; the lock expires after
            # a cooldown, so a probe that never reports back does not keep the rung shut.
            if self.store.set_if_absent(probe_key, "1", self.settings.cooldown_s):
                return "probe"
            return "open"
        except Exception as exc:  # telemetry-like: never fail a request
            self._failed_store(exc)
            return "closed"

    def record(self, rung: int, *, ok: bool | None, error_class: ErrorClass | None = None) -> None:
        """Report a call's outcome: ``ok`` True (any answer), False (an error), None (neither)."""
        if ok is False and error_class is not None and error_class not in COUNTED:
            ok = None
        if ok is None:
            return
        open_until_key, consecutive_key, probe_key = self._names(rung)
        settings = self.settings
        now = self._now()
        calls_key, fails_key = self._bucket_keys(rung, now)[-1]
        ttl = settings.window_s * 2
        try:
            self.store.incr(calls_key, ttl)
            if ok:
                self.store.delete(consecutive_key, open_until_key, probe_key)
                return
            self.store.incr(fails_key, ttl)
            consecutive = self.store.incr(consecutive_key, None)
            (open_until, probing) = self.store.get_many([open_until_key, probe_key])
            trip = consecutive >= settings.failures or (open_until is not None and probing is not None)
            if not trip and settings.failure_rate is not None:
                calls, fails = self._window(rung, now)
                trip = calls >= settings.min_calls and fails / calls >= settings.failure_rate
            if trip:
                self.store.set(open_until_key, repr(now + settings.cooldown_s), ttl=None)
                self.store.delete(probe_key)
        except Exception as exc:
            self._failed_store(exc)

    def _window(self, rung: int, now: float) -> tuple[int, int]:
        pairs = self._bucket_keys(rung, now)
        values = self.store.get_many([k for pair in pairs for k in pair])
        calls = sum(int(v) for v in values[0::2] if v is not None)
        fails = sum(int(v) for v in values[1::2] if v is not None)
        return calls, fails

    def state(self, rung: int) -> BreakerState:
        """The breaker of rung ``rung`` as it is now (raises when the store cannot be read)."""
        open_until_key, consecutive_key, probe_key = self._names(rung)
        now = self._now()
        open_until, consecutive, probing = self.store.get_many([open_until_key, consecutive_key, probe_key])
        calls, fails = self._window(rung, now)
        if open_until is None:
            state: Literal["closed", "open", "half-open"] = "closed"
            reopens = None
        elif now < float(open_until):
            state, reopens = "open", float(open_until) - now
        else:
            state, reopens = ("half-open" if probing is not None else "open"), 0.0
        return BreakerState(self.keys[rung], state, int(consecutive or 0), calls, fails, reopens)


DEFAULT_ENDPOINTS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
"""Where a provider's client goes without a ``base_url``: a rung configured without one and a
client object that reports its default must share a breaker."""


def breaker_key(provider: str | None, model: str | None, endpoint: str | None, fallback: str) -> str:
    """``provider|model|endpoint``: what identifies the thing that fails. The endpoint is
    normalised (no trailing slash, the provider's default when none is given), so that every
    way of naming the same endpoint (a config's ``base_url``, a client's) gives one key."""
    where = (endpoint or "").rstrip("/") or DEFAULT_ENDPOINTS.get(provider or "", "-")
    return f"{provider or '-'}|{model or fallback}|{where}"


_ENDPOINT_ATTRS = ("base_url", "openai_api_base", "api_base", "anthropic_api_url", "endpoint")


def endpoint_of(model: object) -> str | None:
    """The base URL a model object calls, where it tells (credentials stripped), else None."""
    from cascade_router.observability.redaction import safe_url

    for attr in _ENDPOINT_ATTRS:
        value = getattr(model, attr, None)
        if value is not None and not callable(value):
            text = str(value).strip()
            if text:
                return safe_url(text)
    client = getattr(model, "client", None) or getattr(model, "_client", None)
    value = getattr(client, "base_url", None)
    return safe_url(str(value)) if value is not None else None
