"""LangChain's standard integration suite run against a plain ``ChatOpenAI`` pointed at the
cascade server (``cascade-router serve``), whose ladder's rungs are the real local LLM server
(llama.cpp serving Gemma 3 270M): an independent check of the server's OpenAI compatibility.

The cheap rung is scored on its real logprobs, so some requests escalate. Every expected failure
says why; they are the model's and its server's limits, the same as in
``test_standard_integration.py`` (the cascade as a LangChain chat model over the same server).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from tests.langchain_adapter.test_standard_integration import GEMMA_FAILURES, GEMMA_SKIPS, GemmaCapabilities
from tests.server.live import InThread, serving

SERVER: dict[str, str] = {}


def gemma(url: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": {
            "provider": "openai",
            "model": "gemma-3-270m",
            "base_url": url,
            "api_key": "sk-local-not-a-secret",
            "temperature": 0,
            "max_tokens": 24,  # a cap: clients may ask for fewer tokens, never more
            "timeout": 120,
            "max_retries": 0,
        },
    }


@pytest.fixture(scope="module")
def cascade_server(local_llm: str) -> Iterator[InThread]:
    cheap = {**gemma(local_llm, "cheap"), "scorer": {"kind": "logprob"}, "threshold": 0.6}
    with serving({"ladders": {"gemma-ladder": {"rungs": [cheap, gemma(local_llm, "strong")]}}}) as server:
        yield server


@pytest.mark.standard
class TestChatOpenAIOnCascadeServer(GemmaCapabilities, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, cascade_server: InThread) -> None:
        SERVER["url"] = cascade_server.url

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": "gemma-ladder",
            "base_url": f"{SERVER['url']}/v1",
            "api_key": "sk-any",
            "temperature": 0,
            "timeout": 180,
            "max_retries": 0,
            # A proxy is not OpenAI, so ChatOpenAI asks for streamed usage only when told to.
            "stream_usage": True,
            # A pooled connection made on one test's event loop must not outlive it.
            "http_async_client": openai.DefaultAsyncHttpxClient(
                limits=httpx.Limits(max_keepalive_connections=0)
            ),
        }

    expected_failures: ClassVar[dict[str, str]] = GEMMA_FAILURES
    skipped_tests: ClassVar[dict[str, str]] = {
        **GEMMA_SKIPS,
        **{
            name: "the cascade server here serves one ladder, so there is no other model to override to"
            for name in GEMMA_SKIPS
            if name.endswith("_with_model_override")
        },
    }
