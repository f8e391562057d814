"""The server with a real model behind it: the cheap rung is the local llama.cpp server (Gemma 3
270M, real logprobs), the strong one scripted; the official openai client calls the cascade
server, whole and streamed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from cascade_router.testing import ScriptedBackend
from tests.server.live import InThread, serving

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def gemma(url: str) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "gemma-3-270m",
        "base_url": url,
        "api_key": "sk-local-not-a-secret-987654",
        "max_tokens": 12,
        "temperature": 0,
        "timeout": 120,
        "max_retries": 0,
    }


@pytest.fixture
def server(local_llm: str) -> Iterator[tuple[InThread, ScriptedBackend]]:
    spec = gemma(local_llm)
    strong = ScriptedBackend("strong-model", ["Paris."])
    ladders = {
        # threshold 0: the real answer is accepted whatever its logprobs; 1: always escalated
        "gemma-first": {
            "rungs": [{"model": spec, "scorer": {"kind": "logprob"}, "threshold": 0.0}, {"model": strong}]
        },
        "escalates": {
            "rungs": [{"model": spec, "scorer": {"kind": "logprob"}, "threshold": 1.0}, {"model": strong}]
        },
        "gemma-only": {"rungs": [{"model": spec}]},
    }
    with serving({"ladders": ladders}) as running:
        yield running, strong


def test_a_real_model_answers_through_the_server(server: tuple[InThread, ScriptedBackend]) -> None:
    running, strong = server
    client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="sk", max_retries=0, timeout=180)
    answer = client.chat.completions.create(model="gemma-first", messages=QUESTION)  # type: ignore[arg-type]
    assert answer.model == "gemma-3-270m"
    assert answer.choices[0].message.content
    attempt = answer.model_extra["cascade"]["attempts"][0]  # type: ignore[index]
    assert attempt["method"] == "logprob"
    assert 0.0 < attempt["score"] < 1.0  # real logprobs, scored
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0  # the real server's token counts

    escalated = client.chat.completions.with_raw_response.create(model="escalates", messages=QUESTION)  # type: ignore[arg-type]
    assert escalated.headers["x-cascade-answered-by"] == "strong-model"
    assert escalated.headers["x-cascade-escalations"] == "1"
    assert escalated.parse().usage.prompt_tokens > attempt["input_tokens"]  # type: ignore[union-attr]
    assert strong.calls == 1


def test_a_real_model_streams_through_the_server(server: tuple[InThread, ScriptedBackend]) -> None:
    running, _ = server
    client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="sk", max_retries=0, timeout=180)
    chunks = list(
        client.chat.completions.create(
            model="gemma-only",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
            stop=["\n\n"],
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1  # token by token from the real server, not one buffered piece
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.model_extra["cascade"]["answered_by"]["model"] == "gemma-3-270m"  # type: ignore[index]
