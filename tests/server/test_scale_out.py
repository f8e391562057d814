"""Two ``cascade-router serve`` processes sharing a real Redis and a real PostgreSQL behave as one:
a key's rate limit, budget and revocation are global, every answered request is in the shared
decision log, and SIGTERM finishes what is in flight and flushes the log."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from cascade_router.observability.decision_log import DecisionLog
from cascade_router.server import KeyStore
from cascade_router.server.limits import budget_spent
from cascade_router.shared_state import RedisStore
from tests.server.live import Process, write_config
from tests.test_decision_log import postgres_url

PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def ladder_config(*, fault_rate: float = 0.0, delay: float = 0.0) -> dict[str, Any]:
    def scripted(name: str, replies: list[Any], seed: int) -> dict[str, Any]:
        return {
            "provider": "scripted",
            "model": name,
            "replies": replies,
            "max_tokens": 12,
            "fault_rate": fault_rate,
            "seed": seed,
        }

    cheap_replies = [
        {"text": "Paris.", "confidence": 0.95, "delay": delay},
        {"text": "Lyon?", "confidence": 0.2, "delay": delay},
    ]
    return {
        "rungs": [
            {
                "name": "cheap",
                "model": scripted("cheap-model", cheap_replies, 1),
                "scorer": {"kind": "logprob"},
                "threshold": 0.5,
                "price": {"input_per_mtok": 100.0, "output_per_mtok": 100.0},
            },
            {"name": "strong", "model": scripted("strong-model", ["Paris, the capital."], 2), "price": PRICE},
        ]
    }


@pytest.fixture
def shared(tmp_path: Path, redis_url: str) -> dict[str, Any]:
    pg = postgres_url()  # an empty decision log in the test database
    engine = create_engine(pg)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS cascade_api_keys"))
    engine.dispose()
    return {"state": redis_url, "decision_log": pg, "keys": pg, "key_cache_s": 0.5, "shutdown_grace_s": 20}


def post(url: str, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "bot", "messages": MESSAGES, **body},
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )


def logged_ids(pg: str, ids: list[str]) -> set[str]:
    log = DecisionLog(pg)
    try:
        return {i for i in ids if log.get(i) is not None}
    finally:
        log.close()


def test_two_processes_share_limits_budgets_revocation_and_the_log(
    tmp_path: Path, shared: dict[str, Any]
) -> None:
    config = write_config(tmp_path / "server.yaml", {**shared, "ladders": {"bot": ladder_config()}})
    keys = KeyStore(shared["keys"])
    limited, _ = keys.create("limited", rpm=4)
    budgeted, _ = keys.create("budgeted", budget_usd=0.2)
    revoked, revoked_record = keys.create("revoked")
    answered: list[str] = []
    with Process(config) as a, Process(config) as b:
        servers = [a.url, b.url]

        # the rate limit is per key across both processes, not per process
        left = 60 - time.time() % 60
        if left < 10:
            time.sleep(left + 0.1)
        codes = []
        for i in range(6):
            response = post(servers[i % 2], limited)
            codes.append(response.status_code)
            if response.status_code == 200:
                answered.append(response.headers["x-cascade-request-id"])
        assert codes == [200, 200, 200, 200, 429, 429]

        # so is the budget: both processes together never spend more than it
        spent, refused_by = 0.0, set()
        for i in range(60):
            response = post(servers[i % 2], budgeted)
            if response.status_code == 200:
                spent += float(response.headers["x-cascade-cost-usd"])
                answered.append(response.headers["x-cascade-request-id"])
            else:
                assert response.status_code == 429, response.text
                assert response.json()["error"]["code"] == "insufficient_quota"
                refused_by.add(i % 2)
        assert refused_by == {0, 1}
        assert 0.1 < spent <= 0.2

        # a key revoked anywhere stops working everywhere within the key cache time
        assert post(a.url, revoked).status_code == 200
        assert post(b.url, revoked).status_code == 200
        keys.revoke(revoked_record.id)
        time.sleep(0.6)
        assert post(a.url, revoked).status_code == 401
        assert post(b.url, revoked).status_code == 401
    keys.close()
    # both stopped with SIGTERM (uvicorn exits by re-raising it once it has shut down cleanly):
    # their logs were flushed into the one PostgreSQL log
    assert a.process.returncode in (0, -signal.SIGTERM)
    assert b.process.returncode in (0, -signal.SIGTERM)
    assert logged_ids(shared["decision_log"], answered) == set(answered)


def test_sigterm_lets_requests_in_flight_finish_and_flushes_the_log(
    tmp_path: Path, shared: dict[str, Any]
) -> None:
    config = write_config(
        tmp_path / "server.yaml", {**{**shared, "keys": None}, "ladders": {"bot": ladder_config(delay=1.5)}}
    )
    with Process(config) as server:
        # no keys: it says so, and that it serves loopback only
        assert "no API keys configured" in server.output()
        assert "loopback address only" in server.output()
        results: list[httpx.Response] = []

        def call() -> None:
            results.append(post(server.url, "none", stream=False))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the four requests are in flight, waiting on the 1.5 s rung
        server.process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=30)
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert [r.status_code for r in results] == [200] * 4
    ids = [r.headers["x-cascade-request-id"] for r in results]
    assert logged_ids(shared["decision_log"], ids) == set(ids)


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "graceful"])
def test_load_two_processes_faults_and_one_killed_midway(
    tmp_path: Path, shared: dict[str, Any], kill: signal.Signals
) -> None:
    """2,000 requests, 64 at a time, over two processes whose rungs fail 10 % of calls; one
    process is stopped halfway, by a crash (SIGKILL) or a graceful stop (SIGTERM). The client acts
    as a load balancer: a refused connection goes to the other process, a request cut off is not
    retried (it may have cost)."""
    total, concurrency = 2000, 64
    config = write_config(
        tmp_path / "server.yaml", {**shared, "ladders": {"bot": ladder_config(fault_rate=0.1)}}
    )
    keys = KeyStore(shared["keys"])
    budget = 18.0
    key, _ = keys.create("load", budget_usd=budget)
    keys.close()
    with Process(config) as a, Process(config) as b:
        outcome = asyncio.run(_load(a, b, key, kill, total=total, concurrency=concurrency))
    done, lost = outcome["done"], outcome["lost"]
    statuses = Counter(status for status, *_ in done)
    # every request is accounted for: answered, refused with a correct error, or cut off
    assert len(done) + len(lost) == total
    assert set(statuses) <= {200, 429, 502}, statuses
    assert statuses[200] > total * 0.5
    assert statuses[502] > 0  # the cheap rung escalating, then the strong one failing: ~5 %
    # only requests on the stopped process were cut off, each with a clear disconnect error
    assert len(lost) <= concurrency
    assert {server for server, _ in lost} <= {"a"}, lost
    assert all(
        why.startswith(("RemoteProtocolError: Server disconnected", "ReadError")) for _, why in lost
    ), lost
    # no budget was overspent, across both processes
    cost = sum(c for status, _, _, c in done if status == 200)
    store = RedisStore(shared["state"])
    checker = KeyStore(shared["keys"])
    record = checker.check(key)
    checker.close()
    assert record is not None
    assert cost <= budget_spent(store, record) <= budget  # spent and still held, both processes
    ids = [i for _, _, i, _ in done]
    logged = logged_ids(shared["decision_log"], ids)
    records = _count_records(shared["decision_log"])
    if kill == signal.SIGTERM:
        # a graceful stop loses nothing: every request a process took is answered and logged
        # (what was cut off was sent on a connection the stopping process was closing, and
        # never reached it: the log holds exactly the answered requests)
        assert logged == set(ids)
        assert records == len(ids)
    else:
        # a crash loses the requests in flight on it, and the records its log had not yet
        # written (at most about a second's worth); the other process's are all there
        assert lost
        from_b = {i for _, server, i, _ in done if server == "b"}
        assert from_b <= logged
        assert len(set(ids) - logged) <= outcome["answered_by_a_last_second"] + concurrency
    print(
        f"load ({kill.name}): {dict(statuses)}, cut off {len(lost)}, "
        f"answered not logged {len(set(ids) - logged)}, records {records}"
    )


def _count_records(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM cascade_requests")).scalar_one())
    finally:
        engine.dispose()


async def _load(
    a: Process, b: Process, key: str, kill: signal.Signals, *, total: int, concurrency: int
) -> dict[str, Any]:
    done: list[tuple[int, str, str, float]] = []
    lost: list[tuple[str, str]] = []
    halfway = asyncio.Event()
    answered_a: list[float] = []
    killed_at: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(n: int) -> None:
            order = [("a", a.url), ("b", b.url)] if n % 2 == 0 else [("b", b.url), ("a", a.url)]
            async with semaphore:
                for name, url in order:
                    try:
                        response = await client.post(
                            f"{url}/v1/chat/completions",
                            json={"model": "bot", "messages": MESSAGES},
                            headers={"authorization": f"Bearer {key}"},
                        )
                    except httpx.ConnectError:
                        continue  # refused before it was sent: the balancer tries the other one
                    except httpx.TransportError as exc:
                        lost.append((name, f"{type(exc).__name__}: {exc}"))
                        return
                    cost = response.headers.get("x-cascade-cost-usd", "0")
                    done.append(
                        (
                            response.status_code,
                            name,
                            response.headers.get("x-cascade-request-id", ""),
                            float(cost) if response.status_code == 200 else 0.0,
                        )
                    )
                    if name == "a" and response.status_code == 200:
                        answered_a.append(time.monotonic())
                    if len(done) >= total // 2:
                        halfway.set()
                    return
                lost.append(("-", "no server accepted the connection"))

        async def killer() -> None:
            await halfway.wait()
            a.process.send_signal(kill)
            killed_at.append(time.monotonic())

        stopping = asyncio.create_task(killer())
        await asyncio.gather(*(one(n) for n in range(total)))
        await stopping
    last_second = sum(1 for t in answered_a if t >= killed_at[0] - 1.0)
    return {"done": done, "lost": lost, "answered_by_a_last_second": last_second}


def test_a_served_process_exports_its_traces_over_otlp(tmp_path: Path) -> None:
    """``serve`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set exports every span to the collector:
    the server span under the caller's trace, the cascade's spans under it; SIGTERM flushes them."""
    from tests.otlp_receiver import http_receiver

    config = write_config(tmp_path / "server.yaml", {"ladders": {"bot": ladder_config()}})
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with http_receiver() as (endpoint, received):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "gateway"}
        with Process(config, env=env) as server:
            response = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "bot", "messages": MESSAGES},
                headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
                timeout=30,
            )
            assert response.status_code == 200
        spans = received.span_list()
    assert "gateway" in received.service_names()
    names = {s["name"] for s in spans if s["trace_id"] == trace_id}
    assert "POST /v1/chat/completions" in names
    assert len(names) > 1, names  # the cascade's own spans joined the same trace


def test_workers_share_one_metrics_view(tmp_path: Path) -> None:
    """``--workers 2``: two processes behind one port; /metrics sums both (whichever answers)."""
    config = write_config(tmp_path / "server.yaml", {"ladders": {"bot": ladder_config()}})
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with Process(config, args=("--workers", "2"), env=env) as server:
        for _ in range(12):
            assert post(server.url, "none").status_code == 200
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    # both workers wrote their metrics to the shared folder (each its own files, by pid)...
    pids = {f.stem.rsplit("_", 1)[-1] for f in metrics_dir.glob("*.db")}
    assert len(pids) >= 2, sorted(f.name for f in metrics_dir.glob("*.db"))
    # ...and the one scrape summed them: every request counted once, whichever worker took it
    line = next(
        x for x in text.splitlines() if x.startswith('cascade_requests_total{ladder="bot",status="200"}')
    )
    assert float(line.rsplit(" ", 1)[1]) == 12.0
