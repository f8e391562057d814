"""A LlamaIndex LLM as a core ``Backend``, bound to one call's keyword arguments and tools."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LogProb, MessageRole, TextBlock
from llama_index.core.llms import LLM
from llama_index.core.llms.function_calling import FunctionCallingLLM

from cascade_router.backend import BackendBase
from cascade_router.model_io import (
    Message,
    ModelOutput,
    Request,
    TokenLogprob,
    TokenLogprobs,
    ToolCall,
    Usage,
)

_PROVIDERS = {
    "OpenAI": "openai",
    "AzureOpenAI": "azure",
    "Anthropic": "anthropic",
    "Gemini": "google",
    "GoogleGenAI": "google",
    "MistralAI": "mistral",
    "Groq": "groq",
    "Bedrock": "aws",
    "BedrockConverse": "aws",
    "Ollama": None,
    "OpenAILike": None,
}

Parser = Callable[[LLM, ChatResponse], Any]
"""Structured output: returns the parsed object, or raises when the answer does not parse."""


def identity(llm: LLM) -> tuple[str | None, str | None]:
    """(provider, model name) of a LlamaIndex LLM, for pricing and telemetry."""
    name = type(llm).__name__
    provider = _PROVIDERS.get(name, getattr(llm, "provider", None) or name.lower())
    try:
        model = llm.metadata.model_name
    except Exception:
        model = None
    return provider, model


def to_chat_messages(messages: Sequence[Message]) -> list[ChatMessage]:
    roles = {"system": MessageRole.SYSTEM, "assistant": MessageRole.ASSISTANT, "tool": MessageRole.TOOL}
    return [ChatMessage(role=roles.get(m.role, MessageRole.USER), content=m.content) for m in messages]


def to_core_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    roles = {MessageRole.USER: "user", MessageRole.ASSISTANT: "assistant", MessageRole.SYSTEM: "system"}
    return [Message(roles.get(m.role, str(m.role.value)), m.content or "") for m in messages]


def _logprobs(value: list[list[LogProb]] | None) -> TokenLogprobs | None:
    if value is None:
        return None
    return TokenLogprobs(value, _token)  # read on first use


def _token(top: list[LogProb]) -> TokenLogprob | None:
    # LlamaIndex keeps, per generated token, the top alternatives; the first is the token chosen.
    if not top:
        return None
    return TokenLogprob(top[0].token, top[0].logprob, tuple((lp.token, lp.logprob) for lp in top))


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _usage(response: ChatResponse) -> Usage | None:
    extra = response.additional_kwargs
    inp = _field(extra, "prompt_tokens", "input_tokens")
    out = _field(extra, "completion_tokens", "output_tokens")
    if inp is None or out is None:
        raw_usage = _field(response.raw, "usage") if response.raw is not None else None
        if raw_usage is not None:
            inp = _field(raw_usage, "prompt_tokens", "input_tokens")
            out = _field(raw_usage, "completion_tokens", "output_tokens")
    return Usage(int(inp), int(out)) if inp is not None and out is not None else None


def to_output(llm: LLM, response: ChatResponse, parser: Parser | None = None) -> ModelOutput:
    """The signals the cascade reads from a LlamaIndex ``ChatResponse``."""
    calls: list[ToolCall] = []
    invalid: list[str] = []
    if isinstance(llm, FunctionCallingLLM):
        try:
            for sel in llm.get_tool_calls_from_response(response, error_on_no_tool_call=False):
                if not isinstance(sel.tool_kwargs, dict):
                    invalid.append(f"{sel.tool_name}: arguments are not a JSON object")
                else:
                    calls.append(ToolCall(sel.tool_name, sel.tool_kwargs, sel.tool_id))
        except (ValueError, json.JSONDecodeError) as exc:
            invalid.append(f"unparseable tool call: {exc}")
    parsed = parse_error = None
    if parser is not None:
        try:
            parsed = parser(llm, response)
        except Exception as exc:
            parse_error = f"{type(exc).__name__}: {str(exc)[:300]}"
    raw_model = _field(response.raw, "model") if response.raw is not None else None
    return ModelOutput(
        text=response.message.content or "",
        raw=response,
        logprobs=_logprobs(response.logprobs),
        tool_calls=tuple(calls),
        invalid_tool_calls=tuple(invalid),
        usage=_usage(response),
        model=raw_model if isinstance(raw_model, str) else None,
        finish_reason=_field(response.additional_kwargs, "finish_reason"),
        response_id=_field(response.raw, "id") if response.raw is not None else None,
        parse_error=parse_error,
        extra={"parsed": parsed} if parsed is not None else {},
    )


class _Stream:
    def __init__(self, backend: LlamaIndexBackend, request: Request) -> None:
        self._backend = backend
        self._request = request
        self._last: ChatResponse | None = None

    def __iter__(self) -> Iterator[ChatResponse]:
        b = self._backend
        messages = b.messages(self._request)
        stream = (
            b.llm.stream_chat_with_tools(b.tools, chat_history=messages, **b.tool_kwargs, **b.kwargs)  # type: ignore[attr-defined]
            if b.tools
            else b.llm.stream_chat(messages, **b.kwargs)
        )
        for response in stream:
            self._last = response
            yield response

    async def __aiter__(self) -> AsyncIterator[ChatResponse]:
        b = self._backend
        messages = b.messages(self._request)
        stream = await (
            b.llm.astream_chat_with_tools(b.tools, chat_history=messages, **b.tool_kwargs, **b.kwargs)  # type: ignore[attr-defined]
            if b.tools
            else b.llm.astream_chat(messages, **b.kwargs)
        )
        async for response in stream:
            self._last = response
            yield response

    def output(self) -> ModelOutput:
        # A LlamaIndex stream's last response holds the whole message so far.
        last = self._last or ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=""))
        return to_output(self._backend.llm, last, self._backend.parser)

    def partial(self) -> ModelOutput:
        """The answer so far (for early-abort scoring while it is generated)."""
        return self.output()


class LlamaIndexBackend(BackendBase):
    """Calls one LlamaIndex LLM, with tools when the request has them."""

    __slots__ = ("_model", "_provider", "instructions", "kwargs", "llm", "parser", "tool_kwargs", "tools")

    def __init__(
        self,
        llm: LLM,
        *,
        provider: str | None,
        model: str | None,
        kwargs: dict[str, Any] | None = None,
        tools: Sequence[Any] = (),
        tool_kwargs: dict[str, Any] | None = None,
        parser: Parser | None = None,
        instructions: Callable[[str], str] | None = None,
    ) -> None:
        self.llm = llm
        self.instructions = instructions
        """Rewrites the last user turn (a text program's format instructions), for this rung only."""
        self._provider = provider
        self._model = model
        self.kwargs = kwargs or {}
        self.tools = list(tools)
        self.tool_kwargs = tool_kwargs or {}
        self.parser = parser

    @property
    def provider(self) -> str | None:
        return self._provider

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def request_options(self) -> dict[str, Any]:
        return self.kwargs

    def messages(self, request: Request) -> list[ChatMessage]:
        messages = list(request.native) if request.native is not None else to_chat_messages(request.messages)
        if self.instructions is None:
            return messages
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].role == MessageRole.USER:
                content = self.instructions(messages[i].content or "")
                messages[i] = messages[i].model_copy(update={"blocks": [TextBlock(text=content)]})
                break
        return messages

    @staticmethod
    def chunk_text(native: Any) -> str | None:
        """A streamed response's new text (for continuing a broken stream elsewhere)."""
        delta = getattr(native, "delta", None)
        return delta if isinstance(delta, str) else ("" if delta is None else None)

    def invoke(self, request: Request) -> ModelOutput:
        messages = self.messages(request)
        if self.tools:
            response = self.llm.chat_with_tools(  # type: ignore[attr-defined]
                self.tools, chat_history=messages, **self.tool_kwargs, **self.kwargs
            )
        else:
            response = self.llm.chat(messages, **self.kwargs)
        return to_output(self.llm, response, self.parser)

    async def ainvoke(self, request: Request) -> ModelOutput:
        messages = self.messages(request)
        if self.tools:
            response = await self.llm.achat_with_tools(  # type: ignore[attr-defined]
                self.tools, chat_history=messages, **self.tool_kwargs, **self.kwargs
            )
        else:
            response = await self.llm.achat(messages, **self.kwargs)
        return to_output(self.llm, response, self.parser)

    def stream(self, request: Request) -> _Stream:
        return _Stream(self, request)

    def astream(self, request: Request) -> _Stream:
        return _Stream(self, request)
