"""Per-call overhead of the cascade against a bare chat model and LangChain's with_fallbacks,
and what tracing (in-memory exporter) and the decision log (SQLite) add to it.

All models are zero-latency fakes in one process; the variants are interleaved round by round so
that machine noise hits them alike. Reports the median per-call time of each variant and its ratio
to the bare model; writes benchmarks/results/overhead.json.

    .venv/bin/python benchmarks/overhead.py [--rounds 25] [--calls 200]

A wrapper chat model makes two LangChain invocations per call (its own and its rung's), so about
2x the bare model is the floor for a 1-rung cascade.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cascade_router.decision_log import DecisionLog
from cascade_router.telemetry import Telemetry
from langchain_cascade_router import CascadeChatModel

RESULTS = Path(__file__).parent / "results" / "overhead.json"
EXPORTER = InMemorySpanExporter()


def fake() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle([AIMessage("ok")]))


def traced(llm: CascadeChatModel) -> CascadeChatModel:
    """Spans to an in-memory exporter, the cheapest real SDK pipeline."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    llm.engine.telemetry = Telemetry("bench", ["only"], tracer_provider=provider)
    return llm


def variants(log: DecisionLog) -> dict[str, Callable[[], Any]]:
    bare = fake()
    fallbacks = fake().with_fallbacks([fake()])
    one = CascadeChatModel(rungs=[{"model": fake()}])
    two_accept = CascadeChatModel(
        rungs=[{"model": fake(), "scorer": lambda m, a: 0.9, "threshold": 0.5}, {"model": fake()}]
    )
    two_escalate = CascadeChatModel(
        rungs=[{"model": fake(), "scorer": lambda m, a: 0.1, "threshold": 0.5}, {"model": fake()}]
    )
    with_trace = traced(CascadeChatModel(rungs=[{"model": fake()}]))
    with_log = CascadeChatModel(rungs=[{"model": fake()}], decision_log=log)
    with_both = traced(CascadeChatModel(rungs=[{"model": fake()}], decision_log=log))
    return {
        "bare": lambda: bare.invoke("hi"),
        "with_fallbacks": lambda: fallbacks.invoke("hi"),
        "cascade_1_rung": lambda: one.invoke("hi"),
        "cascade_2_rungs_accept_first": lambda: two_accept.invoke("hi"),
        "cascade_2_rungs_escalate_once": lambda: two_escalate.invoke("hi"),
        "cascade_1_rung_traced": lambda: with_trace.invoke("hi"),
        "cascade_1_rung_logged": lambda: with_log.invoke("hi"),
        "cascade_1_rung_traced_logged": lambda: with_both.invoke("hi"),
    }


def measure(rounds: int, calls: int, log_dir: Path) -> tuple[dict[str, list[float]], DecisionLog]:
    log = DecisionLog(log_dir / "bench.db")
    runs = variants(log)
    for fn in runs.values():  # warm up imports, caches and the price catalog
        for _ in range(50):
            fn()
    per_call: dict[str, list[float]] = {name: [] for name in runs}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in runs.items():
                t0 = time.perf_counter_ns()
                for _ in range(calls):
                    fn()
                per_call[name].append((time.perf_counter_ns() - t0) / calls / 1000)
            EXPORTER.clear()
            gc.collect()
    finally:
        gc.enable()
    return per_call, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as log_dir:
        per_call, log = measure(args.rounds, args.calls, Path(log_dir))
        log.close()
        stats = log.stats()
    print(f"decision log: {stats.written} records written, {stats.lost} lost")
    bare = statistics.median(per_call["bare"])
    cascade = statistics.median(per_call["cascade_1_rung"])
    rows = {
        name: {
            "median_us": statistics.median(times),
            "ratio_to_bare": statistics.median(times) / bare,
            "ratio_to_cascade_1_rung": statistics.median(times) / cascade,
        }
        for name, times in per_call.items()
    }
    print(f"{'variant':<32} {'median us/call':>15} {'x bare':>8} {'x cascade':>10}")
    for name, row in rows.items():
        print(
            f"{name:<32} {row['median_us']:>15.1f} {row['ratio_to_bare']:>8.2f} "
            f"{row['ratio_to_cascade_1_rung']:>10.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "rounds": args.rounds,
                "calls_per_round": args.calls,
                "python": platform.python_version(),
                "variants": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
