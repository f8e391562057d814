"""The native openai-SDK backend against a real OpenAI-compatible server (llama.cpp + Gemma 3 270M
on loopback): real logprobs decide accept or escalate, with no LLM framework involved."""

from __future__ import annotations

import pytest

from cascade_router import Cascade, CascadeExhaustedError, LiveChunk, LogprobScorer
from cascade_router.backends.openai import OpenAIBackend
from cascade_router.testing import ScriptedBackend

QUESTION = "What is the capital of France?"


def gemma(url: str, **kw: object) -> OpenAIBackend:
    # max_tokens bounded: this server does not stop generating when a client gives up.
    return OpenAIBackend(
        "gemma-3-270m",
        base_url=url,
        api_key="sk-local-not-a-secret-123456",
        provider=None,
        max_tokens=8,
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(("threshold", "answered"), [(0.0, "gemma-3-270m"), (1.0, "strong")])
def test_real_logprobs_decide(local_llm: str, threshold: float, answered: str) -> None:
    backend = gemma(local_llm)
    cascade = Cascade(
        [
            {"model": backend, "scorer": LogprobScorer(), "threshold": threshold},
            {"model": ScriptedBackend("strong", ["Paris."])},
        ]
    )
    try:
        result = cascade.invoke(QUESTION)
    finally:
        backend.close()  # an unclosed connection would warn during some later test
    first = result.attempts[0]
    assert first.method == "logprob"
    assert first.score is not None
    assert 0.0 < first.score < 1.0
    assert first.usage is not None
    assert first.usage.input_tokens > 0
    assert result.answered_by.name == answered


async def test_async_and_stream(local_llm: str) -> None:
    backend = gemma(local_llm)
    cascade = Cascade(
        [
            {"model": backend, "scorer": LogprobScorer(), "threshold": 0.0},
            {"model": ScriptedBackend("strong", ["Paris."])},
        ]
    )
    try:
        result = await cascade.ainvoke(QUESTION)
    finally:
        await backend.aclose()
    assert result.answered_by.rung == 0
    assert result.output.text
    # The final rung streams live. This server streams text only: no logprobs, and no usage even
    # when asked (stream_options.include_usage), so tokens and cost are unknown, never 0.
    streamed = gemma(local_llm)
    live = Cascade([{"model": streamed}])
    try:
        events = list(live.stream(QUESTION))
    finally:
        streamed.close()
    chunks = [e.native for e in events if isinstance(e, LiveChunk)]
    finished = events[-1].result  # type: ignore[union-attr]
    assert len(chunks) > 1
    assert "".join(chunks) == finished.output.text
    assert finished.answered_by.usage is None
    assert finished.cost_usd is None


def test_unreachable_server_falls_back_and_hides_the_key() -> None:
    dead = OpenAIBackend(
        "m",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-live-abcdefghijklmnopqrstuv",
        max_retries=0,
        timeout=2,
    )
    assert "sk-live" not in repr(dead)
    result = Cascade(
        [{"model": dead}, {"model": ScriptedBackend("backup", ["ok"])}], accept_last=True
    ).invoke("q")
    assert result.attempts[0].decision == "error"
    assert result.output.text == "ok"
    with pytest.raises(CascadeExhaustedError) as info:
        Cascade([{"model": dead}]).invoke("q")
    assert "sk-live" not in str(info.value)
