"""The ``hedged`` mode's state: each rung's recent latencies (for the delay, a ``RungLatencies``)
and the budget of extra calls. Per process; the decisions it feeds are made by the engine's drivers."""

from __future__ import annotations

import os
import threading
import weakref

from cascade_router.config import HedgeSettings
from cascade_router.routing.base import RungLatencies


class HedgeState:
    """What a ladder's hedging needs to remember between requests."""

    def __init__(self, settings: HedgeSettings, n_rungs: int) -> None:
        self.settings = settings
        self.latencies = RungLatencies(n_rungs, window=settings.window)
        self._lock = threading.Lock()
        self.requests = 0
        self.hedges = 0
        _states.add(self)

    def observe(self, rung: int, latency_s: float) -> None:
        """A rung answered after ``latency_s`` seconds."""
        self.latencies.observe(rung, latency_s)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def delay(self, rung: int) -> float | None:
        """Seconds to wait for ``rung`` before hedging; None: do not hedge it (yet)."""
        settings = self.settings
        if settings.delay_s is not None:
            return settings.delay_s
        seen = self.latencies.quantile(rung, settings.quantile, settings.min_samples)
        return seen[0] if seen is not None else None

    def take(self) -> bool:
        """Spend one hedge from the budget (``max_share`` of the requests so far); False when
        it is spent. The first request may always hedge, so a budget is never zero."""
        with self._lock:
            if self.hedges + 1 > max(1.0, self.settings.max_share * self.requests):
                return False
            self.hedges += 1
            return True


_states: weakref.WeakSet[HedgeState] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_states):  # a lock held by another thread at the fork stays held
        state._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
