"""A rung whose scorer keeps getting no signal is reported, not left to escalate silently
(issue 11): a warning once per rung per interval after a few such answers in a row, and the
``cascade.scorer.missing_signal`` metric."""

from __future__ import annotations

import logging

import pytest

from cascade_router import Cascade, LogprobScorer
from cascade_router.observability.signal_watch import SignalWatch
from cascade_router.testing import Reply, ScriptedBackend


def _cascade(replies: list[Reply]) -> Cascade:
    return Cascade(
        [
            {"model": ScriptedBackend("cheap", replies), "scorer": LogprobScorer(), "threshold": 0.5},
            {"model": ScriptedBackend("strong", ["ok"])},
        ],
        name="bot",
        tracing=False,
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cascade_router.signals"]


def test_a_scorer_without_signal_warns_once_after_five_answers(caplog: pytest.LogCaptureFixture) -> None:
    cascade = _cascade([Reply("no logprobs here")])  # cycles: never any logprobs
    caplog.set_level(logging.WARNING, "cascade_router.signals")
    for _ in range(4):
        cascade.invoke("q")
    assert _warnings(caplog) == []
    cascade.invoke("q")
    (message,) = _warnings(caplog)
    assert "'bot'" in message
    assert "rung 'cheap'" in message
    assert "no logprobs returned" in message
    assert "top_logprobs" in message
    for _ in range(20):
        cascade.invoke("q")
    assert len(_warnings(caplog)) == 1, "warned more than once within the interval"


def test_a_scored_answer_resets_the_run(caplog: pytest.LogCaptureFixture) -> None:
    replies = [Reply("x")] * 4 + [Reply("y", confidence=0.9)] + [Reply("x")] * 4
    cascade = _cascade(replies)
    caplog.set_level(logging.WARNING, "cascade_router.signals")
    for _ in range(9):
        cascade.invoke("q")
    assert _warnings(caplog) == []


def test_warns_again_after_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    watch = SignalWatch("bot", after=2, interval=0.0)
    caplog.set_level(logging.WARNING, "cascade_router.signals")
    for _ in range(4):
        watch.missing("cheap", "m", "logprob", "no logprobs returned")
    assert len(_warnings(caplog)) == 3  # at the 2nd, 3rd and 4th answer in a row


def test_the_metric_counts_every_unscored_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from cascade_router.observability import signal_watch

    reader = InMemoryMetricReader()
    counter = (
        MeterProvider(metric_readers=[reader])
        .get_meter("cascade_router")
        .create_counter("cascade.scorer.missing_signal")
    )
    monkeypatch.setattr(signal_watch, "_counter", lambda: counter)
    cascade = _cascade([Reply("no logprobs")])
    for _ in range(3):
        cascade.invoke("q")
    points = [
        p
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "cascade.scorer.missing_signal"
        for p in m.data.data_points
    ]
    assert sum(p.value for p in points) == 3
    assert {p.attributes["cascade.rung.name"] for p in points} == {"cheap"}
