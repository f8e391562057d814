"""Per-call overhead of the cascade against a bare chat model and LangChain's with_fallbacks.

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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_cascade_router import CascadeChatModel

RESULTS = Path(__file__).parent / "results" / "overhead.json"


def fake() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle([AIMessage("ok")]))


def variants() -> dict[str, Callable[[], Any]]:
    bare = fake()
    fallbacks = fake().with_fallbacks([fake()])
    one = CascadeChatModel(rungs=[{"model": fake()}])
    two_accept = CascadeChatModel(
        rungs=[{"model": fake(), "scorer": lambda m, a: 0.9, "threshold": 0.5}, {"model": fake()}]
    )
    two_escalate = CascadeChatModel(
        rungs=[{"model": fake(), "scorer": lambda m, a: 0.1, "threshold": 0.5}, {"model": fake()}]
    )
    return {
        "bare": lambda: bare.invoke("hi"),
        "with_fallbacks": lambda: fallbacks.invoke("hi"),
        "cascade_1_rung": lambda: one.invoke("hi"),
        "cascade_2_rungs_accept_first": lambda: two_accept.invoke("hi"),
        "cascade_2_rungs_escalate_once": lambda: two_escalate.invoke("hi"),
    }


def measure(rounds: int, calls: int) -> dict[str, list[float]]:
    runs = variants()
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
            gc.collect()
    finally:
        gc.enable()
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    per_call = measure(args.rounds, args.calls)
    bare = statistics.median(per_call["bare"])
    rows = {
        name: {"median_us": statistics.median(times), "ratio_to_bare": statistics.median(times) / bare}
        for name, times in per_call.items()
    }
    print(f"{'variant':<32} {'median us/call':>15} {'x bare':>8}")
    for name, row in rows.items():
        print(f"{name:<32} {row['median_us']:>15.1f} {row['ratio_to_bare']:>8.2f}")
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
