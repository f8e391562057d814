"""Noticing a scorer that keeps getting no signal.

A rung whose scorer gets no signal (no logprobs returned, a judge that answers neither yes nor
no) falls back to ``on_missing`` on every request: with the default, every request escalates and
the cascade silently costs what the strong model alone would. This module counts such answers in
the ``cascade.scorer.missing_signal`` metric and, after ``after`` of them in a row on one rung,
logs a warning naming the rung, the reason and the usual fixes, at most once per rung per
``interval`` seconds. A scored answer resets the run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from cascade_router.observability import metrics

_log = logging.getLogger("cascade_router.signals")

HINTS = {
    "no logprobs returned": (
        "ask the client for them (ChatOpenAI / OpenAILike: logprobs=True; llama.cpp servers also "
        "need top_logprobs, which the cascade sets on clients it knows) or score this rung with "
        "a judge, validity or learned scorer"
    ),
}


def _counter() -> Any:
    """The ``cascade.scorer.missing_signal`` counter."""
    return metrics.counter(
        "cascade.scorer.missing_signal",
        "{answer}",
        "Answers a rung's scorer could not score (no signal); on_missing decided them",
    )


class SignalWatch:
    """Per rung, how many answers in a row had no signal; warns past ``after``."""

    def __init__(self, cascade: str, *, after: int = 5, interval: float = 600.0) -> None:
        self.cascade = cascade
        self.after = after
        self.interval = interval
        self._lock = threading.Lock()
        self._in_a_row: dict[str, int] = {}
        self._warned_at: dict[str, float] = {}

    def scored(self, rung: str) -> None:
        if self._in_a_row.get(rung):
            with self._lock:
                self._in_a_row[rung] = 0

    def missing(self, rung: str, model: str | None, method: str | None, why: str) -> None:
        try:
            counter = _counter()
            if counter is not None:
                counter.add(1, {"cascade.name": self.cascade, "cascade.rung.name": rung})
        except Exception:  # metrics must never break a request
            pass
        with self._lock:
            n = self._in_a_row[rung] = self._in_a_row.get(rung, 0) + 1
            now = time.monotonic()
            if n < self.after or now - self._warned_at.get(rung, -math.inf) < self.interval:
                return
            self._warned_at[rung] = now
        hint = HINTS.get(why, "check that the rung's model returns what its scorer reads")
        _log.warning(
            "cascade %r: the %s scorer of rung %r (%s) got no signal on the last %d answers (%s); "
            "each was decided by on_missing, which escalates by default. Fix: %s.",
            self.cascade,
            method or "its",
            rung,
            model or "unknown model",
            n,
            why,
            hint,
        )
