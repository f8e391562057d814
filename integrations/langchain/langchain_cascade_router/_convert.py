"""Conversions between LangChain messages and the core's framework-neutral types."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata

from cascade_router.model_io import Message, ModelOutput, ToolCall, Usage
from cascade_router.openai_format import parse_logprobs

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def to_core_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """The plain-text view of a conversation that judges read."""
    out = []
    for m in messages:
        text = str(m.text)
        if isinstance(m, AIMessage) and m.tool_calls:
            calls = "; ".join(f"{c['name']}({json.dumps(c['args'])})" for c in m.tool_calls)
            text = f"{text}\n[calls tools] {calls}".strip()
        out.append(Message(_ROLES.get(m.type, m.type), text))
    return out


def to_lc_messages(messages: Sequence[Message]) -> list[BaseMessage]:
    """LangChain messages for a request the core built itself (a judge prompt)."""
    out: list[BaseMessage] = []
    for m in messages:
        if m.role == "system":
            out.append(SystemMessage(m.content))
        elif m.role == "assistant":
            out.append(AIMessage(m.content))
        elif m.role == "tool":
            out.append(ToolMessage(m.content, tool_call_id="unknown"))
        else:
            out.append(HumanMessage(m.content))
    return out


def to_output(message: BaseMessage, *, parsed: Any = None, parse_error: str | None = None) -> ModelOutput:
    """The signals the cascade reads from an ``AIMessage``."""
    if not isinstance(message, AIMessage):
        raise TypeError(f"a rung returned {type(message).__name__}, expected an AIMessage")
    meta = message.response_metadata
    usage = message.usage_metadata
    extra: dict[str, Any] = {}
    if parsed is not None:
        extra["parsed"] = parsed
    return ModelOutput(
        text=message.text,
        raw=message,
        logprobs=parse_logprobs(meta.get("logprobs")),
        tool_calls=tuple(ToolCall(c["name"], c["args"], c.get("id")) for c in message.tool_calls),
        invalid_tool_calls=tuple(
            f"{c.get('name')}: {c.get('error') or 'arguments are not valid JSON'}"
            for c in message.invalid_tool_calls
        ),
        usage=Usage(usage["input_tokens"], usage["output_tokens"]) if usage else None,
        model=meta.get("model_name") or meta.get("model"),
        finish_reason=meta.get("finish_reason") or meta.get("stop_reason"),
        response_id=meta.get("id") or message.id,
        parse_error=parse_error,
        extra=extra,
    )


def usage_metadata(usage: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )


def strip_chunk(chunk: AIMessageChunk) -> AIMessageChunk:
    """A rung's chunk as forwarded to the caller: its usage and model name are left out,
    because the cascade's last chunk carries the totals and the answering model, and chunk
    metadata is summed (usage) or concatenated (strings) when the caller aggregates."""
    meta = chunk.response_metadata
    if chunk.usage_metadata is None and "model_name" not in meta:
        return chunk
    update: dict[str, Any] = {"usage_metadata": None}
    if "model_name" in meta:
        update["response_metadata"] = {k: v for k, v in meta.items() if k != "model_name"}
    return chunk.model_copy(update=update)


def message_to_chunk(message: AIMessage) -> AIMessageChunk:
    """A whole buffered answer as one chunk, tool calls included."""
    return AIMessageChunk(
        content=message.content,
        additional_kwargs=message.additional_kwargs,
        response_metadata={k: v for k, v in message.response_metadata.items() if k != "model_name"},
        id=message.id,
        tool_call_chunks=[
            {
                "name": c["name"],
                "args": json.dumps(c["args"]),
                "id": c.get("id"),
                "index": i,
                "type": "tool_call_chunk",
            }
            for i, c in enumerate(message.tool_calls)
        ],
    )


def chunk_to_message(chunks: Sequence[AIMessageChunk]) -> AIMessage:
    """Aggregate a streamed answer into the message it amounts to."""
    if not chunks:
        return AIMessage(content="")
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return AIMessage(
        content=total.content,
        additional_kwargs=total.additional_kwargs,
        response_metadata=total.response_metadata,
        tool_calls=total.tool_calls,
        invalid_tool_calls=total.invalid_tool_calls,
        usage_metadata=total.usage_metadata,
        id=total.id,
    )


def tool_names(tools: Sequence[Any]) -> frozenset[str] | None:
    """Names of the bound tools, for the validity check; None (no check) when any tool has no
    name we can read, such as a provider's built-in tool (``{"type": "web_search"}``)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    names = set()
    for tool in tools:
        try:
            names.add(convert_to_openai_tool(tool)["function"]["name"])
        except (KeyError, ValueError, TypeError):
            return None
    return frozenset(names)
