"""The documented recipe, as written, gets real logprob scores from the local llama.cpp server
(issue 11): ``ChatOpenAI(..., logprobs=True)`` and ``OpenAILike(..., logprobs=True)`` without
``top_logprobs``, which this server needs before it computes any logprobs. The cascade asks for
them on a rung its scorer reads them from; before, every request escalated for a missing signal."""

from __future__ import annotations

import httpx
from langchain_openai import ChatOpenAI
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.cascade_router.testing import ScriptedLLM
from llama_index.llms.openai_like import OpenAILike

from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

QUESTIONS = ["What is the capital of France?", "Name a colour.", "What is 2 + 2?"]


def test_langchain_chat_openai_with_logprobs_true_is_scored(local_llm: str) -> None:
    with httpx.Client() as http_client:
        cheap = ChatOpenAI(
            model="gemma-3-270m",
            base_url=local_llm,
            api_key="sk-local-not-a-secret",  # type: ignore[arg-type]
            logprobs=True,  # as the docs write it: no top_logprobs
            temperature=0,
            max_retries=0,
            extra_body={"max_tokens": 8},
            http_client=http_client,
        )
        llm = CascadeChatModel(
            rungs=[
                {"model": cheap, "scorer": {"kind": "logprob"}, "threshold": 0.5, "name": "local"},
                {"model": ScriptedChatModel(model_name="strong", replies=[Reply("ok")]), "name": "strong"},
            ],
            tracing=False,
        )
        for question in QUESTIONS:
            first = llm.invoke(question).response_metadata["cascade"]["attempts"][0]
            assert first["method"] == "logprob", first
            assert first["score"] is not None, f"no real score: {first['reason']}"
            assert 0.0 < first["score"] <= 1.0
            assert not first["reason"].startswith("missing signal"), first
        assert cheap.top_logprobs is None, "the user's own model object was changed"


def test_llamaindex_openai_like_with_logprobs_true_is_scored(local_llm: str) -> None:
    with httpx.Client() as http_client:
        cheap = OpenAILike(
            model="gemma-3-270m",
            api_base=local_llm,
            api_key="not-needed",
            is_chat_model=True,
            max_tokens=8,
            max_retries=0,
            logprobs=True,  # no top_logprobs
            http_client=http_client,
            context_window=2048,
        )
        llm = CascadeLLM(
            rungs=[
                {"model": cheap, "scorer": {"kind": "logprob"}, "threshold": 0.5, "name": "local"},
                {"model": ScriptedLLM(model_name="strong", replies=["ok"]), "name": "strong"},
            ]
        )
        for question in QUESTIONS:
            response = llm.chat([ChatMessage(role=MessageRole.USER, content=question)])
            first = response.additional_kwargs["cascade"]["attempts"][0]
            assert first["method"] == "logprob", first
            assert first["score"] is not None, f"no real score: {first['reason']}"
            assert not first["reason"].startswith("missing signal"), first
