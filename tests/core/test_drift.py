"""Drift: live scores compared with what a threshold was calibrated on (issue 12)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from cascade_router import Cascade, ConfigError, LogprobScorer
from cascade_router.cli.app import app
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.observability.drift import decile_edges, psi
from cascade_router.testing import Reply, ScriptedBackend

CALIBRATION_SCORES = [0.5 + 0.45 * i / 999 for i in range(1000)]  # uniform on [0.5, 0.95]
REFERENCE = {
    "score_edges": decile_edges(CALIBRATION_SCORES),
    "accepted_share": 0.5,
    "items": 1000,
    "window": 100,
}


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = random.Random(1)
    edges = REFERENCE["score_edges"]
    same = [rng.uniform(0.5, 0.95) for _ in range(2000)]
    shifted = [rng.uniform(0.3, 0.7) for _ in range(2000)]
    assert psi(edges, same) < 0.02
    assert psi(edges, shifted) > 1.0
    assert decile_edges(list(range(100))) == [10, 20, 30, 40, 50, 60, 70, 80, 90]


def _cascade(confidence: float, log: DecisionLog | None = None, tracing: bool = False) -> Cascade:
    return Cascade(
        [
            {
                "model": ScriptedBackend("cheap", [Reply("answer", confidence=confidence)]),
                "name": "cheap",
                "scorer": LogprobScorer(),
                "threshold": 0.725,
                "calibration": REFERENCE,
            },
            {"model": ScriptedBackend("strong", ["ok"]), "name": "strong"},
        ],
        name="bot",
        tracing=tracing,
        decision_log=log,
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cascade_router.drift"]


def test_live_scores_unlike_the_calibration_warn_and_mark_the_span(
    caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
) -> None:
    caplog.set_level(logging.WARNING, "cascade_router.drift")
    steady = _cascade(confidence=0.72)  # inside the calibration's range, but all in one decile
    drifting = _cascade(confidence=0.3, tracing=True)
    results = [drifting.invoke("q") for _ in range(120)]
    flagged = [r for r in results if "drift" in r.attempts[0].details]
    assert flagged, "no check flagged the shift"
    assert len(flagged) <= 2  # a check every window / 5 answers once the window is full: 100, 120
    (message,) = _warnings(caplog)  # once per interval, not per check
    assert "rung 'cheap'" in message
    assert "accepted share 0.0% vs 50.0%" in message
    events = [e for s in spans.get_finished_spans() for e in s.events if e.name == "cascade.drift"]
    assert events
    assert events[0].attributes["cascade.drift.psi"] > 0.25
    for _ in range(120):
        steady.invoke("q")
    assert len(_warnings(caplog)) == 2  # one number repeated is a shift too (a PSI of ~4)


def test_scores_like_the_calibration_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cascade_router.drift")
    rng = random.Random(3)
    replies = [Reply("answer", confidence=rng.uniform(0.5, 0.95)) for _ in range(400)]
    cascade = Cascade(
        [
            {
                "model": ScriptedBackend("cheap", replies),
                "scorer": LogprobScorer(),
                "threshold": 0.725,
                "calibration": REFERENCE,
            },
            {"model": ScriptedBackend("strong", ["ok"])},
        ],
        tracing=False,
    )
    for _ in range(400):
        assert "drift" not in cascade.invoke("q").attempts[0].details
    assert _warnings(caplog) == []


def test_a_bad_calibration_reference_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"rungs\[0\]\.calibration\.score_edges"):
        Cascade(
            [
                {
                    "model": ScriptedBackend("cheap", ["a"]),
                    "scorer": LogprobScorer(),
                    "threshold": 0.5,
                    "calibration": {**REFERENCE, "score_edges": list(reversed(REFERENCE["score_edges"]))},
                },
                {"model": ScriptedBackend("strong", ["ok"])},
            ],
            tracing=False,
        )


def test_log_drift_reports_a_shift_after_the_fact(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    log = DecisionLog(db)
    config = tmp_path / "calibrated.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "bot",
                "rungs": [
                    {
                        "model": "openai:gpt-4o-mini",
                        "name": "cheap",
                        "scorer": {"kind": "logprob"},
                        "threshold": 0.725,
                        "calibration": REFERENCE,
                    },
                    {"model": "openai:gpt-4o", "name": "strong"},
                ],
            }
        )
    )
    runner = CliRunner()
    unscored = Cascade(
        [{"model": ScriptedBackend("cheap", ["a"]), "name": "cheap"}], tracing=False, decision_log=log
    )
    unscored.invoke("q")  # a logged request without a score from the calibrated rung
    log.flush(10)
    empty = runner.invoke(app, ["log", "drift", "--db", str(db), "--config", str(config)])
    assert empty.exit_code == 0, empty.output
    assert "no data" in empty.output
    cascade = _cascade(confidence=0.3, log=log)
    for _ in range(40):
        cascade.invoke("q")
    log.flush(10)
    drifted = runner.invoke(
        app,
        ["log", "drift", "--db", str(db), "--config", str(config), "--since", "1h"],
        env={"COLUMNS": "250"},
    )
    assert drifted.exit_code == 1, drifted.output
    assert "DRIFT: score PSI" in " ".join(drifted.output.split())
    assert "41 requests" in drifted.output
    bad = runner.invoke(
        app, ["log", "drift", "--db", str(db), "--config", str(config), "--since", "yesterday"]
    )
    assert bad.exit_code != 0
    assert "expected a duration such as 30m, 24h or 7d" in bad.output
    log.close()


def test_calibrate_writes_the_reference_drift_is_checked_against(tmp_path: Path) -> None:
    from tests.test_evaluation import synthetic

    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in synthetic(240)))
    runner = CliRunner()
    assert (
        runner.invoke(
            app, ["learn", "--dataset", str(data), "--model", "cheap", "--out", str(tmp_path / "s.json")]
        ).exit_code
        == 0
    )
    config = tmp_path / "ladder.yaml"
    config.write_text(
        "name: t\nrungs:\n  - model: cheap\n    scorer: {kind: learned, path: s.json}\n    threshold: 0.5\n"
        "    calibration: {score_edges: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],\n"
        "                  accepted_share: 0.5, window: 200}\n"
        "  - model: strong\n"
    )
    out = tmp_path / "calibrated.yaml"
    ran = runner.invoke(
        app,
        [
            "calibrate",
            "--config",
            str(config),
            "--dataset",
            str(data),
            "--target",
            "escalation=0.3",
            "--out",
            str(out),
        ],
    )
    assert ran.exit_code == 0, ran.output
    written = yaml.safe_load(out.read_text())["rungs"][0]
    reference = written["calibration"]
    assert len(reference["score_edges"]) == 9
    assert reference["score_edges"] == sorted(reference["score_edges"])
    assert reference["items"] == 120
    assert reference["window"] == 200  # the user's own watch settings are kept
    assert abs(reference["accepted_share"] - 0.7) < 0.1  # escalation=0.3 on the calibration half
