"""LangChain's standard integration suite, run against a CascadeChatModel whose rungs are ChatOpenAI
clients of the real local LLM server (llama.cpp serving Gemma 3 270M on loopback).

The cheap rung is scored on its real logprobs, so some requests escalate and some do not. Every
test that is turned off or expected to fail says why. All but one reason are the 270M base model's
or its server's capabilities, seen in the failures; the exception (CHILD_RUNS) is the cascade's own
design and says so.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from cascade_router import LogprobScorer
from langchain_cascade_router import CascadeChatModel

SERVER: dict[str, str] = {}

# Why tests fail against this server, seen in their failures (the same as with a bare ChatOpenAI).
NO_TOOL_CALLS = (
    "Gemma 3 270M is a base model and its server's gemma chat format has no tool calling: unless one "
    "named tool is forced (which the server does by grammar), the answer is text, never a tool call"
)
NO_TOOL_HISTORY = (
    "the server rejects an assistant turn that carries tool calls (HTTP 500: its gemma chat format "
    "has no tool-call turns), so a conversation with tool history cannot be sent"
)
CHILD_RUNS = (
    "not the model: the cascade is a chat model whose rung calls are child chat-model runs, so a "
    "callback handler sees on_chat_model_start for the cascade and again for the rung (the suite "
    "expects one). Structured output itself works here: see the pydantic-v1 and optional-param tests"
)
STREAMED_TOOL_NAME = (
    "the server repeats the tool's name in every streamed tool-call chunk, so LangChain's chunk merge "
    "makes 'JokeJoke' (a bare ChatOpenAI streaming from this server fails the same way). Reached "
    "because structured output is scored (issue 11): the cheap rung's answer escalates on this "
    "model, and the final rung streams live"
)
UNFINISHED_JSON = (
    "in JSON mode the 270M base model keeps adding keys and does not close its object within the "
    "24-token budget these tests afford (finish_reason=length)"
)


def gemma(url: str, name: str) -> ChatOpenAI:
    # langchain-openai sends max_completion_tokens, which this server ignores (it would generate
    # to the end of its context): max_tokens goes in the body itself.
    return ChatOpenAI(
        model="gemma-3-270m",
        name=name,
        base_url=url,
        api_key="sk-local-not-a-secret",  # type: ignore[arg-type]
        temperature=0,
        logprobs=True,
        timeout=120,
        max_retries=0,
        extra_body={"max_tokens": 24},
        # No pooled connections: the suite runs each async test on its own event loop, and a
        # connection pooled on a closed loop is reported as unclosed when collected.
        http_async_client=openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_keepalive_connections=0)),
    )


class GemmaCapabilities:
    """What the local server's model can do, as the standard suite asks. The capabilities are
    switched on so that their tests run and show how they fail; each failure is then expected,
    with its reason (strict: a pass is reported). Shared with the suite run through the cascade
    server (``test_standard_server.py``)."""

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        # The server has no response_format json_schema, but it does force a named tool call by
        # grammar, so structured output goes through function calling.
        return {"method": "function_calling"}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True


GEMMA_FAILURES = {
    **dict.fromkeys(
        (
            "test_tool_calling",
            "test_tool_calling_async",
            "test_bind_runnables_as_tools",
            "test_tool_choice",
            "test_tool_calling_with_no_arguments",
            "test_agent_loop",
            "test_unicode_tool_call_integration",
        ),
        NO_TOOL_CALLS,
    ),
    **dict.fromkeys(
        (
            "test_tool_message_histories_string_content",
            "test_tool_message_histories_list_content",
            "test_tool_message_error_status",
            "test_structured_few_shot_examples",
        ),
        NO_TOOL_HISTORY,
    ),
    "test_json_mode": UNFINISHED_JSON,
}
GEMMA_SKIPS = {
    **dict.fromkeys(
        (
            "test_invoke_with_model_override",
            "test_ainvoke_with_model_override",
            "test_stream_with_model_override",
            "test_astream_with_model_override",
        ),
        "the local server serves one model (Gemma 3 270M), so there is no other model to override to",
    ),
    **dict.fromkeys(
        (
            "test_image_inputs",
            "test_image_tool_message",
            "test_pdf_inputs",
            "test_pdf_tool_message",
            "test_audio_inputs",
            "test_anthropic_inputs",
        ),
        "Gemma 3 270M reads text only: no images, PDFs or audio, and no Anthropic-format content blocks",
    ),
    "test_stream_time": "a benchmark over VCR-recorded provider traffic; this suite talks to a live "
    "local server, whose timing on a shared 2-core machine means nothing",
}


class TestCascadeOnLocalServer(GemmaCapabilities, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, local_llm: str) -> None:
        SERVER["url"] = local_llm

    @property
    def chat_model_class(self) -> type[CascadeChatModel]:
        return CascadeChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        url = SERVER["url"]
        return {
            "rungs": [
                {"model": gemma(url, "cheap"), "scorer": LogprobScorer(), "threshold": 0.6},
                {"model": gemma(url, "strong")},
            ]
        }

    expected_failures: ClassVar[dict[str, str]] = {
        **GEMMA_FAILURES,
        **dict.fromkeys(("test_structured_output", "test_structured_output_async"), CHILD_RUNS),
        "test_structured_output_pydantic_2_v1": STREAMED_TOOL_NAME,
    }
    skipped_tests: ClassVar[dict[str, str]] = GEMMA_SKIPS
