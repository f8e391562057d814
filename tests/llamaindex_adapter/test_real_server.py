"""CascadeLLM against a real OpenAI-compatible server (llama.cpp + Gemma 3 270M on loopback),
through llama-index-llms-openai-like, with real token logprobs deciding accept or escalate."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.cascade_router.testing import ScriptedLLM
from llama_index.llms.openai_like import OpenAILike

from cascade_router import LogprobScorer


def gemma(url: str, http_client: httpx.Client) -> OpenAILike:
    # max_tokens bounded: this server generates to the end of its context otherwise, and it does
    # not stop when a client gives up.
    return OpenAILike(
        model="gemma-3-270m",
        api_base=url,
        api_key="not-needed",
        is_chat_model=True,
        max_tokens=8,
        timeout=60,
        http_client=http_client,
        max_retries=0,
        logprobs=True,
        top_logprobs=2,
        context_window=2048,
    )


@pytest.mark.parametrize(("threshold", "answered"), [(0.0, "local"), (1.0, "strong")])
def test_real_logprobs_decide(local_llm: str, threshold: float, answered: str) -> None:
    # Our own HTTP client, closed here: an unclosed connection would warn during a later test.
    with httpx.Client() as http_client:
        llm = CascadeLLM(
            rungs=[
                {
                    "model": gemma(local_llm, http_client),
                    "name": "local",
                    "scorer": LogprobScorer(),
                    "threshold": threshold,
                },
                {"model": ScriptedLLM(model_name="strong", replies=["Paris."]), "name": "strong"},
            ]
        )
        response = llm.chat([ChatMessage(role=MessageRole.USER, content="What is the capital of France?")])
    cascade: dict[str, Any] = response.additional_kwargs["cascade"]
    first = cascade["attempts"][0]
    assert first["method"] == "logprob"
    assert 0.0 < first["score"] < 1.0  # a real mean token probability from the server
    assert first["input_tokens"] > 0
    assert first["output_tokens"] > 0
    assert cascade["answered_by"]["name"] == answered
    assert first["decision"] == ("accept" if answered == "local" else "escalate")
