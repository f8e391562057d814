"""Run by tests/core/test_frameworkless.py in a fresh interpreter where LangChain, LangGraph and
LlamaIndex cannot be imported: a ladder of native openai-SDK rungs on the local LLM server, in all
four modes, exporting its trace over OTLP/HTTP and writing a decision log. Prints one JSON line.

    python frameworkless_run.py <server base url> <OTLP/HTTP traces url> <sqlite path>
"""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
from typing import Any

BLOCKED = ("langchain", "langchain_core", "langchain_openai", "langgraph", "llama_index")


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", maxsplit=1)[0] in BLOCKED:
            raise ImportError(f"blocked {name}: this run must not need an LLM framework")


sys.meta_path.insert(0, _Block())

from cascade_router import Cascade, Finished, LiveChunk, LogprobScorer, WholeAnswer  # noqa: E402
from cascade_router.backends.openai import OpenAIBackend  # noqa: E402
from cascade_router.observability.otel import configure_tracing  # noqa: E402

QUESTION = "What is the capital of France?"


def ladder(url: str, threshold: float, db: str) -> Cascade:
    def gemma(name: str) -> OpenAIBackend:
        # Bounded: this server keeps generating after a client gives up. Greedy, so that every
        # mode gets the same answer and the same logprobs.
        return OpenAIBackend(
            "gemma-3-270m", base_url=url, api_key="sk-local", provider=None, max_tokens=8, temperature=0.0
        )

    return Cascade(
        [
            {"model": gemma("cheap"), "name": "cheap", "scorer": LogprobScorer(), "threshold": threshold},
            {"model": gemma("strong"), "name": "strong"},
        ],
        name=f"native-{threshold}",
        decision_log=db,
    )


def summary(result: Any) -> dict[str, Any]:
    return {
        "request_id": result.request_id,
        "trace_id": result.trace_id,
        "answered": result.answered_by.name,
        "text": result.output.text,
        "decisions": [a.decision for a in result.attempts],
        "scores": [a.score for a in result.attempts],
    }


def from_stream(events: list[Any]) -> dict[str, Any]:
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1, events
    out = summary(finished[0].result)
    out["streamed"] = "".join(
        str(e.native) if isinstance(e, LiveChunk) else e.output.text
        for e in events
        if isinstance(e, LiveChunk | WholeAnswer)
    )
    return out


async def run_async(cascade: Cascade) -> tuple[dict[str, Any], dict[str, Any]]:
    invoked = summary(await cascade.ainvoke(QUESTION))
    streamed = from_stream([e async for e in cascade.astream(QUESTION)])
    await cascade.aclose()
    return invoked, streamed


def main() -> None:
    url, traces_url, db = sys.argv[1:4]
    provider = configure_tracing("frameworkless-test", protocol="http/protobuf", endpoint=traces_url)
    runs: dict[str, dict[str, Any]] = {}
    for threshold in (0.0, 1.0):  # real logprobs always clear 0 and never reach 1
        cascade = ladder(url, threshold, db)
        runs[f"{threshold}/invoke"] = summary(cascade.invoke(QUESTION))
        runs[f"{threshold}/stream"] = from_stream(list(cascade.stream(QUESTION)))
        cascade.close()
        runs[f"{threshold}/ainvoke"], runs[f"{threshold}/astream"] = asyncio.run(run_async(cascade))
        assert cascade.decision_log is not None
        cascade.decision_log.flush()
    provider.shutdown()  # flushes the batch exporter
    frameworks = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
    print(json.dumps({"runs": runs, "frameworks_loaded": frameworks}))


if __name__ == "__main__":
    main()
