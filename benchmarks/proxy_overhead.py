"""Latency the OpenAI-compatible server adds over calling the same ladder in-process, measured paired.

The ladder is one scripted zero-latency rung (``{provider: scripted}``), so what is measured is
the server alone: HTTP parsing, the request's checks, the cascade's own work, JSON out. Two
variants, in alternating batches (a fresh random order each round):

- **direct**: ``await cascade.ainvoke(...)`` in this process, ``concurrency`` tasks at a time;
- **server**: ``cascade-router serve`` (one uvicorn worker, its own process) called over
  loopback HTTP/1.1 keep-alive by a minimal asyncio client (prebuilt request bytes; an HTTP
  library would add its own milliseconds to what is measured), ``concurrency`` connections.

Per round, each variant's p50 and p99 latency; the added latency is server minus direct in the
same round, and the figure is the median over rounds with a bootstrap 95 % interval. At
concurrency 64 both variants queue (one event loop each), so their latencies include waiting for
the other 63 requests; the difference is still what the server adds. Requests per second per
worker come from the server batches at each concurrency. Nothing is logged or traced in either
variant; between batches the server is idle and the direct variant's tasks are all done.

    .venv/bin/python benchmarks/proxy_overhead.py [--rounds 20] [--requests 400] [--seed 0]

Writes benchmarks/results/proxy_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from cascade_router import Cascade


def ladder(delay: float) -> dict[str, Any]:
    reply = {"text": "Paris.", "delay": delay}
    return {"rungs": [{"name": "only", "model": {"provider": "scripted", "model": "m", "replies": [reply]}}]}


# name -> (concurrency, the rung's latency in seconds)
SCENARIOS = {"c1": (1, 0.0), "c64": (64, 0.0), "c64_upstream_200ms": (64, 0.2)}
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
GOAL = {"p50_ms": 2.0, "p99_ms": 10.0}
ANCHORS = {
    "litellm_proxy_ms": "3-4 (LiteLLM docs; an independent mock-upstream benchmark)",
    "portkey_ms": "about 2.4",
    "bifrost_go_ms": "about 0.4",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(config: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "cascade_router.cli", "serve", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the server did not start")


def request_bytes(port: int, model: str) -> bytes:
    body = json.dumps({"model": model, "messages": MESSAGES}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def server_batch(
    port: int, payload: bytes, total: int, concurrency: int, stagger: float
) -> tuple[list[float], float]:
    latencies: list[float] = []
    per_connection = total // concurrency

    async def connection(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(i * stagger)
        try:
            for _ in range(per_connection):
                t0 = time.perf_counter()
                writer.write(payload)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"the server answered {status}")
        finally:
            writer.close()
            await writer.wait_closed()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(concurrency)))
    return latencies, time.perf_counter() - t0


async def direct_batch(
    cascade: Cascade, total: int, concurrency: int, stagger: float
) -> tuple[list[float], float]:
    latencies: list[float] = []
    per_task = total // concurrency

    async def task(i: int) -> None:
        await asyncio.sleep(i * stagger)
        for _ in range(per_task):
            t0 = time.perf_counter()
            result = await cascade.ainvoke(MESSAGES[0]["content"])
            latencies.append(time.perf_counter() - t0)
            assert result.output.text == "Paris."

    t0 = time.perf_counter()
    await asyncio.gather(*(task(i) for i in range(concurrency)))
    return latencies, time.perf_counter() - t0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bootstrap(values: list[float], rng: random.Random, n: int = 2000) -> tuple[float, float]:
    """95 % interval of the median, by resampling the paired per-round values."""
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[int(0.025 * n)], medians[int(0.975 * n) - 1]


async def measure(port: int, scenario: str, rounds: int, total: int, seed: int) -> dict[str, Any]:
    concurrency, delay = SCENARIOS[scenario]
    # With an upstream latency, the 64 callers start spread over it, as independent users are:
    # started together they would arrive in lockstep bursts of 64, every 200 ms, for ever.
    stagger = delay / concurrency
    cascade = Cascade.from_config(ladder(delay), tracing=False)
    payload = request_bytes(port, scenario)
    rng = random.Random(seed)
    added_p50: list[float] = []
    added_p99: list[float] = []
    server_p50: list[float] = []
    direct_p50: list[float] = []
    server_p99: list[float] = []
    direct_p99: list[float] = []
    rps: list[float] = []
    # one unmeasured batch of each: imports, connection set-up, the JIT-less warm-up of caches
    await server_batch(port, payload, total, concurrency, stagger)
    await direct_batch(cascade, total, concurrency, stagger)
    for _ in range(rounds):
        order = ["server", "direct"]
        rng.shuffle(order)
        got: dict[str, tuple[list[float], float]] = {}
        for variant in order:
            gc.collect()
            await asyncio.sleep(0.05)  # the other variant's leftovers settle before timing
            if variant == "server":
                got[variant] = await server_batch(port, payload, total, concurrency, stagger)
            else:
                got[variant] = await direct_batch(cascade, total, concurrency, stagger)
        s, d = got["server"][0], got["direct"][0]
        server_p50.append(quantile(s, 0.5) * 1e3)
        direct_p50.append(quantile(d, 0.5) * 1e3)
        server_p99.append(quantile(s, 0.99) * 1e3)
        direct_p99.append(quantile(d, 0.99) * 1e3)
        added_p50.append(server_p50[-1] - direct_p50[-1])
        added_p99.append(server_p99[-1] - direct_p99[-1])
        rps.append(len(s) / got["server"][1])
    ci = random.Random(seed + 1)
    return {
        "concurrency": concurrency,
        "rung_latency_s": delay,
        "p50_ms": round(statistics.median(added_p50), 3),
        "p50_ms_95ci": [round(x, 3) for x in bootstrap(added_p50, ci)],
        "p99_ms": round(statistics.median(added_p99), 3),
        "p99_ms_95ci": [round(x, 3) for x in bootstrap(added_p99, ci)],
        "server_p50_ms": round(statistics.median(server_p50), 3),
        "server_p99_ms": round(statistics.median(server_p99), 3),
        "direct_p50_ms": round(statistics.median(direct_p50), 3),
        "direct_p99_ms": round(statistics.median(direct_p99), 3),
        "requests_per_s_per_worker": round(statistics.median(rps), 1),
        "meets_goal": statistics.median(added_p50) <= GOAL["p50_ms"]
        and statistics.median(added_p99) <= GOAL["p99_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=448, help="per batch (a multiple of 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "proxy_overhead.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        # One ladder per scenario, named after it; the server does not trace, as the direct
        # variant does not (tracing=False there; no tracer provider here).
        config.write_text(
            yaml.safe_dump({"ladders": {name: ladder(d) for name, (_, d) in SCENARIOS.items()}})
        )
        port = free_port()
        server = start_server(config, port)
        try:
            results = {
                name: asyncio.run(measure(port, name, args.rounds, args.requests, args.seed))
                for name in SCENARIOS
            }
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    report = {
        "what": "latency the server adds over the same ladder called in-process (one scripted "
        "rung: zero latency, or 200 ms like a fast provider), one uvicorn worker, loopback HTTP/1.1 "
        "keep-alive; at c64 with a zero-latency rung both variants are saturated and their "
        "latencies are mostly queueing (64 / throughput)",
        "goal": GOAL,
        "anchors": ANCHORS,
        **results,
        "rounds": args.rounds,
        "requests_per_batch": args.requests,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name in SCENARIOS:
        r = results[name]
        print(
            f"{name}: added p50 {r['p50_ms']} ms {r['p50_ms_95ci']}, "
            f"p99 {r['p99_ms']} ms {r['p99_ms_95ci']}; "
            f"server p50 {r['server_p50_ms']} ms vs direct {r['direct_p50_ms']} ms; "
            f"{r['requests_per_s_per_worker']} req/s per worker"
        )


if __name__ == "__main__":
    main()
