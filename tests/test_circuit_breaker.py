"""Circuit breakers (issue 13): a dead rung is skipped, probed after a cooldown, and closed again
when it answers; the state is shared by processes through a real Redis."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cascade_router import Cascade
from cascade_router.circuit import CircuitBreakers, CircuitBreakerSettings
from cascade_router.cli.app import app
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.testing.fault_server import FaultServer


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def _rungs(url: str, primary: str) -> list[dict[str, Any]]:
    def model(name: str) -> dict[str, Any]:
        return {"provider": "openai", "model": name, "base_url": url, "api_key": "sk-cb", "max_retries": 0}

    return [
        {"model": model(primary), "name": "primary", "price": 0},
        {"model": model(f"ok/{primary}"), "name": "backup", "price": 0},
    ]


def test_a_dead_primary_is_called_only_until_its_breaker_opens(server: FaultServer, tmp_path: Path) -> None:
    """The issue's finding: 15 requests paid 45 attempts on a dead primary. With the breaker
    (and the cascade's retries on), the primary is called until the breaker opens, then skipped."""
    log = DecisionLog(tmp_path / "log.db")
    cascade = Cascade(
        _rungs(server.url, "503/dead"),
        max_retries=2,
        circuit_breaker={"failures": 3, "cooldown_s": 60},
        decision_log=log,
        tracing=False,
    )
    with cascade:
        results = [cascade.invoke("q") for _ in range(15)]
    assert len(server.requests_for("503/dead")) == 3
    assert all(r.answered_by.name == "backup" for r in results)
    skipped = results[-1].attempts[0]
    assert (skipped.decision, skipped.reason, skipped.cost_usd) == ("skipped", "skipped: circuit open", 0.0)
    assert "circuit breaker is open" in (skipped.error or "")
    log.flush()
    row = log.get(results[-1].request_id)
    assert row is not None
    assert [a["decision"] for a in row["attempts"]] == ["skipped", "accept"]
    log.close()


def test_an_open_breaker_probes_once_after_the_cooldown_and_closes_on_success(server: FaultServer) -> None:
    cascade = Cascade(
        _rungs(server.url, "down-for-2/recovering"),
        circuit_breaker={"failures": 2, "cooldown_s": 0.4, "failure_rate": None},
        tracing=False,
    )
    with cascade:
        first = [cascade.invoke("q").attempts[0].decision for _ in range(3)]
        assert first == ["error", "error", "skipped"]
        time.sleep(0.45)
        probe = cascade.invoke("q")  # the primary has recovered: the probe succeeds
        assert probe.answered_by.name == "primary"
        after = [cascade.invoke("q").answered_by.name for _ in range(3)]
    assert after == ["primary"] * 3
    assert len(server.requests_for("down-for-2/recovering")) == 6


def test_a_failed_probe_opens_the_breaker_again(server: FaultServer) -> None:
    cascade = Cascade(
        _rungs(server.url, "503/still-dead"),
        circuit_breaker={"failures": 1, "cooldown_s": 0.3, "failure_rate": None},
        tracing=False,
    )
    with cascade:
        assert cascade.invoke("q").attempts[0].decision == "error"
        assert cascade.invoke("q").attempts[0].decision == "skipped"
        time.sleep(0.35)
        assert cascade.invoke("q").attempts[0].decision == "error"  # the probe
        assert cascade.invoke("q").attempts[0].decision == "skipped"
    assert len(server.requests_for("503/still-dead")) == 2


def test_only_one_probe_at_a_time() -> None:
    breakers = CircuitBreakers(CircuitBreakerSettings(failures=1, cooldown_s=0.2), ["t|one-probe|-"])
    breakers.record(0, ok=False, error_class="retryable")
    assert breakers.gate(0) == "open"
    time.sleep(0.25)
    gates: list[str] = []
    threads = [threading.Thread(target=lambda: gates.append(breakers.gate(0))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(gates) == ["open"] * 15 + ["probe"]


def test_failure_rate_over_the_window_opens_it() -> None:
    settings = CircuitBreakerSettings(failures=100, failure_rate=0.5, min_calls=6, window_s=60)
    breakers = CircuitBreakers(settings, ["t|flapping|-"])
    for i in range(5):
        breakers.record(0, ok=i % 2 == 0, error_class=None if i % 2 == 0 else "retryable")
    assert breakers.gate(0) == "closed"  # 5 calls: below min_calls
    breakers.record(0, ok=False, error_class="retryable")  # 3 of 6 failed
    assert breakers.gate(0) == "open"


def test_request_errors_do_not_count_against_the_endpoint() -> None:
    breakers = CircuitBreakers(CircuitBreakerSettings(failures=2), ["t|neutral|-"])
    for error_class in ("bad_request", "context_length", "policy", "auth") * 3:
        breakers.record(0, ok=False, error_class=error_class)  # type: ignore[arg-type]
    assert breakers.gate(0) == "closed"
    assert breakers.state(0).consecutive_failures == 0


def test_an_unreachable_store_lets_every_call_through(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    cascade = Cascade(
        _rungs(server.url, "ok"),
        circuit_breaker={"store": "redis://127.0.0.1:1/0"},
        tracing=False,
    )
    with cascade:
        result = cascade.invoke("q")
    assert result.answered_by.name == "primary"
    assert "circuit breaker store unreachable" in caplog.text


def test_breaker_shows_in_the_rung_span(server: FaultServer, spans: Any) -> None:
    cascade = Cascade(_rungs(server.url, "503/traced"), circuit_breaker={"failures": 1, "cooldown_s": 60})
    with cascade:
        cascade.invoke("q")
        spans.clear()
        cascade.invoke("q")
    rung_spans = [s for s in spans.get_finished_spans() if s.name.startswith("cascade.rung 0")]
    assert rung_spans, [s.name for s in spans.get_finished_spans()]
    attrs = dict(rung_spans[0].attributes or {})
    assert attrs["cascade.decision"] == "skipped"
    assert attrs["cascade.circuit.state"] == "open"


CHILD = textwrap.dedent(
    """
    import sys
    from cascade_router import Cascade

    config, n = sys.argv[1], int(sys.argv[2])
    cascade = Cascade.from_config(config)
    print(",".join(cascade.invoke("q").attempts[0].decision for _ in range(n)))
    """
)


def test_breakers_are_shared_across_processes_through_redis(
    server: FaultServer, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "ladder.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            name: shared
            tracing: false
            circuit_breaker: {{failures: 3, cooldown_s: 60, store: "{redis_url}"}}
            rungs:
              - name: primary
                price: 0
                model: {{provider: openai, model: 503/redis-shared, base_url: "{server.url}",
                         api_key: sk-cb, max_retries: 0}}
              - name: backup
                price: 0
                model: {{provider: openai, model: ok/redis-shared, base_url: "{server.url}",
                         api_key: sk-cb, max_retries: 0}}
            """
        )
    )

    def child(n: int) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(config), str(n)], capture_output=True, text=True, check=True
        )
        return done.stdout.strip().split(",")

    assert child(3) == ["error"] * 3  # the first worker trips the breaker
    assert child(4) == ["skipped"] * 4  # a second worker never calls the dead primary
    assert len(server.requests_for("503/redis-shared")) == 3

    runner = CliRunner()
    shown = runner.invoke(app, ["health", str(config)], env={"COLUMNS": "250"})
    assert shown.exit_code == 1, shown.output  # an open breaker: unhealthy
    text = " ".join(shown.output.split())
    assert "primary" in text
    assert "open" in text
    as_json = runner.invoke(app, ["health", str(config), "--json"])
    states = [line for line in as_json.output.splitlines() if line.startswith("{")]
    assert '"state": "open"' in states[0]
    assert '"state": "closed"' in states[1]


def test_a_forked_worker_keeps_working_with_the_breakers(server: FaultServer) -> None:
    """A lock held by another thread at fork() must not hang the child's breakers."""
    import os

    from cascade_router.shared_state import open_store
    from tests.forking import wait_for_child

    store = open_store(None)
    lock = store._lock  # type: ignore[attr-defined]
    lock.acquire()  # as if another thread were inside the store at the fork
    try:
        pid = os.fork()
        if pid == 0:  # the child: the breakers must answer, not deadlock
            code = 0
            try:
                breakers = CircuitBreakers(CircuitBreakerSettings(failures=1), ["t|forked|-"])
                breakers.record(0, ok=False, error_class="retryable")
                code = 0 if breakers.gate(0) == "open" else 3
            except BaseException:
                code = 4
            os._exit(code)
    finally:
        lock.release()
    wait_for_child(pid)


@pytest.mark.parametrize(
    "model",
    [
        "openai:gpt-4o-mini",
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": "http://user:pw@127.0.0.1:9/v1",
            "api_key": "sk-k",
        },
        {"provider": "anthropic", "model": "claude-3-5-haiku-latest", "api_key": "sk-ant-k"},
    ],
)
def test_health_reads_the_breaker_keys_a_running_ladder_writes(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cascade-router health`` derives the keys from the config without building clients; they
    must be the ones the built ladder uses, or it would show breakers nobody trips."""
    from cascade_router.cli.health import _keys
    from cascade_router.config import load_config

    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    source = {"rungs": [{"model": model, "name": "only"}], "circuit_breaker": {}}
    with Cascade.from_config(source, tracing=False) as cascade:
        breakers = cascade.ladder.engine.breakers
        assert breakers is not None
        assert _keys(load_config(source)) == list(breakers.keys)
    assert "pw" not in breakers.keys[0]
