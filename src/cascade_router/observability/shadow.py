"""Shadow sampling: the rungs a request did not need, called off the request path.

A cascade's log only holds a stronger rung's answer for requests that escalated, so it cannot say
what escalating the others would have changed. With ``shadow: {rate: 0.02,
max_cost_per_day_usd: 5}``, a sampled share of the requests a lower rung answered also get the
remaining rungs' answers, on a background thread, after the caller has its answer:

- never on the request path: the answer, its latency and its cost are those of the live request
  (the shadow calls run after it returned, and their cost is not in the request's);
- within a budget: once the day's shadow spending (UTC) reaches ``max_cost_per_day_usd``, requests
  are no longer sampled; a shadow call whose cost is unknown (no price) stops sampling for the day,
  since the budget could not bound it. ``max_in_flight`` bounds the shadow calls running at once;
  a sampled request beyond it is dropped. Drops are counted (``cascade.shadow.dropped``, by
  reason) and warned about at most once per ``interval`` seconds;
- stored beside the live answers: the request's decision-log record is written when its shadow
  calls end, with them as extra attempts marked ``"shadow": true`` (answers stored only where the
  log stores content). ``cascade-router log label`` labels them and ``log export --format
  dataset`` turns them into evaluation data.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from cascade_router.observability import metrics

_log = logging.getLogger("cascade_router.shadow")


def _dropped() -> Any:
    return metrics.counter(
        "cascade.shadow.dropped", "{request}", "Requests sampled for shadow calls that were not shadowed"
    )


class ShadowSampler:
    """Decides which requests get shadow calls, runs them, and keeps the daily budget."""

    def __init__(
        self,
        cascade: str,
        *,
        rate: float,
        max_cost_per_day_usd: float,
        max_in_flight: int = 2,
        interval: float = 600.0,
        seed: int | None = None,
    ) -> None:
        self.cascade = cascade
        self.rate = rate
        self.max_cost_per_day_usd = max_cost_per_day_usd
        self.max_in_flight = max_in_flight
        self.interval = interval
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._day = ""
        self._spent = 0.0
        self._unpriced = False
        self._in_flight = 0
        self._warned_at: dict[str, float] = {}
        self.dropped: dict[str, int] = {}
        self.shadowed = 0
        self._pool: ThreadPoolExecutor | None = None

    def _today(self) -> None:
        day = datetime.now(UTC).date().isoformat()
        if day != self._day:
            self._day, self._spent, self._unpriced = day, 0.0, False

    @property
    def spent_today(self) -> float:
        with self._lock:
            self._today()
            return self._spent

    def submit(self, job: Callable[[], float | None]) -> bool:
        """Run ``job`` (which returns what its calls cost, None when unknown) in the background
        if this request is sampled and the budget and capacity allow; False otherwise (the
        caller then writes its record as usual)."""
        with self._lock:
            if self._random.random() >= self.rate:
                return False
            self._today()
            if self._unpriced:
                reason = "unknown cost"
            elif self._spent >= self.max_cost_per_day_usd:
                reason = "daily budget"
            elif self._in_flight >= self.max_in_flight:
                reason = "too many in flight"
            else:
                reason = ""
                self._in_flight += 1
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="cascade-shadow")
                pool = self._pool
        if reason:
            self._drop(reason)
            return False
        pool.submit(self._run, job)
        return True

    def _run(self, job: Callable[[], float | None]) -> None:
        cost: float | None = 0.0
        try:
            cost = job()
        except Exception as exc:  # a shadow call must never surface anywhere but the log
            _log.warning("cascade %r: a shadow job failed: %s", self.cascade, exc)
        finally:
            with self._lock:
                self._in_flight -= 1
                self.shadowed += 1
                self._today()
                if cost is None:
                    self._unpriced = True
                else:
                    self._spent += cost

    def _drop(self, reason: str) -> None:
        metrics.add(_dropped(), 1, {"cascade.name": self.cascade, "cascade.shadow.reason": reason})
        now = time.monotonic()
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            if now - self._warned_at.get(reason, -math.inf) < self.interval:
                return
            self._warned_at[reason] = now
            count = self.dropped[reason]
        _log.warning(
            "cascade %r: a request sampled for shadow calls was not shadowed (%s; %d so far)",
            self.cascade,
            reason,
            count,
        )

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the shadow jobs in flight; True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._in_flight == 0:
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
