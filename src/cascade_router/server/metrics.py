"""The server's Prometheus metrics (``GET /metrics``), with ``prometheus-client``.

One registry per app, so that tests and embedded apps do not share counters. Under
``--workers N`` each worker is a process: ``cascade-router serve`` then points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder and ``/metrics`` sums every worker's files
(prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from cascade_router.attempts import Attempt, Result

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _LogLosses(Collector):
    def __init__(self, lost: Callable[[], int]) -> None:
        self._lost = lost

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "cascade_decision_log_lost",
            "Decision-log records dropped (buffer full, log closed) or not written, this process",
        )
        family.add_metric([], float(self._lost()))
        yield family


class ServerMetrics:
    """Requests, escalations, errors by class, per-rung latency, cost and decision-log losses."""

    def __init__(self, decision_log_lost: Callable[[], int]) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cascade_requests", "Requests by ladder and HTTP status", ["ladder", "status"], registry=r
        )
        self.escalations = Counter(
            "cascade_escalations",
            "Rungs escalated from (a rung called and not answering)",
            ["ladder"],
            registry=r,
        )
        self.answered = Counter(
            "cascade_answered", "Requests answered, by rung", ["ladder", "rung"], registry=r
        )
        self.errors = Counter(
            "cascade_errors",
            "Errors by class: rung errors (retryable, timeout, auth...) and request errors (http_4xx...)",
            ["ladder", "error_class"],
            registry=r,
        )
        self.rung_latency = Histogram(
            "cascade_rung_latency_seconds",
            "Rung calls from call to decision, scoring included",
            ["ladder", "rung"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cost = Counter(
            "cascade_cost_usd", "Known cost of model calls, US dollars", ["ladder"], registry=r
        )
        self.in_flight = Gauge(
            "cascade_requests_in_flight", "Requests being answered", registry=r, multiprocess_mode="livesum"
        )
        if not self.multiprocess:
            r.register(_LogLosses(decision_log_lost))
        self._lost = decision_log_lost
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        # ``labels()`` looks the child up under a lock each time; a request touches four or more.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record(self, ladder: str, result: Result | None, attempts: list[Attempt], status: int) -> None:
        child = self._child
        child(self.requests, ladder, str(status)).inc()
        for attempt in attempts:
            if attempt.shadow or attempt.decision == "skipped":
                continue
            child(self.rung_latency, ladder, attempt.name).observe(attempt.latency_s)
            if attempt.error_class is not None:
                child(self.errors, ladder, attempt.error_class).inc()
            if attempt.decision in ("escalate", "error"):
                child(self.escalations, ladder).inc()
            cost = attempt.total_cost_usd
            if cost:
                child(self.cost, ladder).inc(cost)
        if result is not None:
            child(self.answered, ladder, result.answered_by.name).inc()
        if status >= 400:
            child(self.errors, ladder, f"http_{status}").inc()

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(_LogLosses(self._lost))
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def snapshot(registry: Any) -> dict[str, float]:
    """Every sample as ``name{labels}`` to value (for tests and the load report)."""
    values: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values
