"""The OpenAI chat-completions wire format: requests read and checked, answers and errors written.

Every field of OpenAI's request is known here. Those the cascade can honour are honoured (sent
on to the rungs, or used by the cascade itself); those it cannot (``n`` above 1, audio, the
deprecated ``functions``) are refused with a 400 naming the field. A field OpenAI does not have
is refused too, so a misspelt setting is never silently ignored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cascade_router.attempts import Result
from cascade_router.model_io import ModelOutput, TokenLogprob


class ApiError(Exception):
    """An error answered in OpenAI's format: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        cascade: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.cascade = cascade

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if self.cascade is not None:
            error["cascade"] = self.cascade
        return {"error": error}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class StreamOptions(_Strict):
    include_usage: bool = False
    """Send a last chunk with the usage of every attempt."""
    include_obfuscation: bool | None = None
    """OpenAI's padding of streamed chunks; accepted and not needed (no padding is sent)."""


class CascadeOptions(_Strict):
    """The request extension ``cascade``: this request's inputs to the ladder."""

    start_at: int | str | None = None
    """Skip the rungs below this one (its name or index)."""
    max_cost_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """The most this request may cost (the ``cost`` routing rule)."""
    deadline_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds this request may take (the ``deadline`` rule; the server's limit when shorter)."""


class ChatMessage(BaseModel):
    """One message; fields beyond OpenAI's are refused by the request's check."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None


class ChatRequest(_Strict):
    """OpenAI's ``POST /v1/chat/completions`` body (2025), plus ``cascade``."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    modalities: list[str] | None = None
    # Known to OpenAI and refused here (``_refused``), so the caller hears why.
    audio: Any = None
    prediction: Any = None
    functions: Any = None
    function_call: Any = None
    web_search_options: Any = None
    cascade: CascadeOptions | None = None

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        kind = value.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise ValueError("type must be 'text', 'json_object' or 'json_schema'")
        if kind == "json_schema" and not isinstance(value.get("json_schema"), dict):
            raise ValueError("json_schema needs a 'json_schema' object with the schema")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for i, tool in enumerate(value or ()):
            function = tool.get("function")
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
                raise ValueError(f"tool {i} must be {{'type': 'function', 'function': {{'name': ...}}}}")
        return value


# Sent on to the rungs as the caller gave them.
_FORWARDED = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "seed",
    "store",
    "service_tier",
    "reasoning_effort",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
)

_REFUSED = {
    "audio": "audio output is not supported by the cascade server",
    "prediction": "predicted outputs are not supported by the cascade server",
    "functions": "the deprecated 'functions' is not supported; use 'tools'",
    "function_call": "the deprecated 'function_call' is not supported; use 'tool_choice'",
    "web_search_options": "web search is not supported by the cascade server",
}


def parse_request(raw: bytes) -> ChatRequest:
    """The request body, checked; an ``ApiError`` (400) naming the field otherwise."""
    try:
        # One pass in pydantic's Rust core: JSON parsing and the fields' checks together.
        request = ChatRequest.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        if err["type"] == "json_invalid":
            raise ApiError(400, f"the request body is not valid JSON: {err['msg']}") from None
        if err["type"] == "model_type" and not err["loc"]:
            raise ApiError(400, "the request body must be a JSON object") from None
        param = ".".join(str(p) for p in err["loc"]) or None
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field (not part of the chat completions API)"
        if err["type"] == "missing":
            message = "required field is missing"
        raise ApiError(400, f"{param}: {message}" if param else message, param=param) from None
    for name, why in _REFUSED.items():
        if getattr(request, name) is not None:
            raise ApiError(400, f"{name}: {why}", param=name, code="unsupported_parameter")
    if request.n not in (None, 1):
        raise ApiError(
            400,
            "n: the cascade returns one answer per request; n must be 1",
            param="n",
            code="unsupported_value",
        )
    if request.modalities not in (None, ["text"]):
        raise ApiError(400, "modalities: only ['text'] is supported", param="modalities")
    if request.stream_options is not None and not request.stream:
        raise ApiError(400, "stream_options: only allowed when stream is true", param="stream_options")
    return request


def rung_params(request: ChatRequest) -> dict[str, Any]:
    """What the rungs send besides the messages."""
    params: dict[str, Any] = {}
    for name in _FORWARDED:
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    return params


def messages_of(request: ChatRequest) -> tuple[dict[str, Any], ...]:
    return tuple(m.model_dump(exclude_unset=True) for m in request.messages)


@dataclass(frozen=True, slots=True)
class Completion:
    """One answered request, in the form every response shape is written from."""

    completion_id: str
    created: int
    result: Result
    want_logprobs: bool

    @property
    def model(self) -> str:
        answered = self.result.answered_by
        return answered.model or answered.name


def finish_reason(output: ModelOutput) -> str:
    if output.tool_calls:
        return "tool_calls"
    reason = output.finish_reason or "stop"
    return reason if reason in ("stop", "length", "tool_calls", "content_filter") else "stop"


def tool_calls_json(output: ModelOutput, *, indexed: bool = False) -> list[dict[str, Any]]:
    calls = []
    for i, call in enumerate(output.tool_calls):
        item: dict[str, Any] = {
            "id": call.id or f"call_{i}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.args)},
        }
        if indexed:
            item = {"index": i, **item}
        calls.append(item)
    return calls


def logprobs_json(tokens: Any) -> dict[str, Any] | None:
    if tokens is None:
        return None

    def one(t: TokenLogprob) -> dict[str, Any]:
        return {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": list(t.token.encode()),
            "top_logprobs": [{"token": a, "logprob": lp, "bytes": list(a.encode())} for a, lp in t.top],
        }

    return {"content": [one(t) for t in tokens], "refusal": None}


def usage_json(result: Result) -> dict[str, int]:
    usage = result.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def cascade_json(result: Result) -> dict[str, Any]:
    """The cascade record sent in the response's ``cascade`` field (no answers' text)."""
    return result.to_dict()


def completion_json(done: Completion) -> dict[str, Any]:
    output = done.result.output
    message: dict[str, Any] = {"role": "assistant", "content": output.text or None, "refusal": None}
    if output.tool_calls:
        message["tool_calls"] = tool_calls_json(output)
    return {
        "id": done.completion_id,
        "object": "chat.completion",
        "created": done.created,
        "model": done.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": logprobs_json(output.logprobs) if done.want_logprobs else None,
                "finish_reason": finish_reason(output),
            }
        ],
        "usage": usage_json(done.result),
        "system_fingerprint": None,
        "cascade": cascade_json(done.result),
    }


def chunk_json(
    completion_id: str,
    created: int,
    model: str,
    delta: Mapping[str, Any],
    *,
    finish: str | None = None,
    logprobs: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": dict(delta), "logprobs": logprobs, "finish_reason": finish}],
    }
    if extra:
        chunk.update(extra)
    return chunk


def now() -> int:
    return int(time.time())
