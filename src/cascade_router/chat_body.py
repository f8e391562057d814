"""An OpenAI chat-completions request carried to the rungs as it came (``ChatBody``).

The OpenAI-compatible server (``cascade_router.server``) receives requests with tools,
``tool_choice``, ``response_format``, ``stop``, sampling settings and multi-part messages. A
rung on an OpenAI-compatible API sends them on unchanged (``OpenAIBackend``); judges and
learned scorers read the plain-text view (``plain_messages``), as they do for every request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cascade_router.model_io import Message, Request

_CAPPED = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True, slots=True)
class ChatBody:
    """A chat-completions body: OpenAI-format ``messages`` and the settings sent with them."""

    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any]
    """What the rung sends besides the messages: ``tools``, ``tool_choice``, ``response_format``,
    ``stop``, ``temperature``, ``max_tokens``... (never ``model``, ``stream`` or ``n``)."""

    def has_turn(self) -> bool:
        """Whether a message other than a system or developer prompt is there to answer."""
        return any(m.get("role") not in ("system", "developer") for m in self.messages)

    @property
    def json_mode(self) -> str | None:
        """``json_object`` or ``json_schema`` when the caller asked for a JSON answer."""
        kind = (self.params.get("response_format") or {}).get("type")
        return kind if kind in ("json_object", "json_schema") else None

    def payload(self, rung_params: Mapping[str, Any]) -> dict[str, Any]:
        """The rung's own settings under the caller's, except that a rung's ``max_tokens`` (or
        ``max_completion_tokens``) is a cap: the caller may ask for fewer, never for more (the
        budget and cost rules bound a rung's cost by it)."""
        body = {**rung_params, **self.params}
        caps = [rung_params[k] for k in _CAPPED if isinstance(rung_params.get(k), int)]
        if caps:
            cap = min(caps)
            for key in _CAPPED:
                if key in body:
                    body[key] = min(int(body[key]), cap)
        return body


def text_of(content: Any) -> str:
    """A message's content as text: a string as it is, the text parts of a list joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") in ("text", "input_text"):
            parts.append(str(part.get("text", "")))
    return "\n".join(parts)


def plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """The plain-text view judges and learned scorers read. A ``developer`` turn is a system
    prompt; an assistant's tool calls are written as ``name(arguments)`` lines."""
    plain: list[Message] = []
    for message in messages:
        role = str(message.get("role"))
        text = text_of(message.get("content"))
        calls = message.get("tool_calls") or ()
        if calls:
            lines = [
                f"{c.get('function', {}).get('name')}({c.get('function', {}).get('arguments', '')})"
                for c in calls
                if isinstance(c, Mapping)
            ]
            text = "\n".join([text, *lines]) if text else "\n".join(lines)
        plain.append(Message("system" if role == "developer" else role, text))
    return plain


def chat_request(body: ChatBody, *, metadata: Mapping[str, Any] | None = None) -> Request:
    """The core ``Request`` for a chat body: the body itself is what rungs send."""
    tools = body.params.get("tools")
    names = frozenset(str(t.get("function", {}).get("name")) for t in tools) if tools else None
    return Request(
        body, to_messages=lambda b: plain_messages(b.messages), tool_names=names, metadata=metadata
    )


def json_problem(request: Request, text: str, has_tool_calls: bool) -> str | None:
    """Why an answer to a request that asked for JSON (``response_format``) is not JSON, or None.

    Set as the answer's ``parse_error``, it makes the answer invalid: the rung escalates."""
    native = request.native
    if not isinstance(native, ChatBody) or native.json_mode is None or has_tool_calls:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"response_format {native.json_mode}: the answer is not JSON ({exc.msg} at {exc.pos})"
    if not isinstance(value, dict):
        return f"response_format {native.json_mode}: the answer is JSON but not an object"
    return None


def _anthropic_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice in (None, "auto"):
        return {"type": "auto"} if choice else None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        return {"type": "tool", "name": str(choice["function"].get("name"))}
    raise ValueError(f"tool_choice {choice!r} has no Anthropic equivalent")


def _anthropic_turn(message: Mapping[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if role == "tool":
        return {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": str(message.get("tool_call_id")),
                    "content": text_of(message.get("content")),
                }
            ],
        }
    text = text_of(message.get("content"))
    calls = message.get("tool_calls") or ()
    if role == "assistant" and calls:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        for call in calls:
            function = call.get("function", {})
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except json.JSONDecodeError:
                arguments = {"arguments": function.get("arguments")}
            blocks.append(
                {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}
            )
        return {"role": "assistant", "content": blocks}
    return {"role": "assistant" if role == "assistant" else "user", "content": text}


def anthropic_body(
    body: ChatBody, model: str, max_tokens: int, rung_params: Mapping[str, Any]
) -> dict[str, Any]:
    """An OpenAI chat body in the Messages API's terms: system and developer turns as
    ``system``, tool calls and results as ``tool_use`` / ``tool_result`` blocks, tools with their
    JSON schema as ``input_schema``, ``stop`` as ``stop_sequences``. A JSON ``response_format``
    (which the Messages API has no setting for) becomes an instruction in the system prompt, and
    the answer is checked as JSON like any rung's. Settings with no Anthropic equivalent raise
    ``ValueError`` naming them, rather than being dropped."""
    params = dict(body.params)
    system = [text_of(m.get("content")) for m in body.messages if m.get("role") in ("system", "developer")]
    turns = [_anthropic_turn(m) for m in body.messages if m.get("role") not in ("system", "developer")]
    asked = params.pop("max_tokens", None) or params.pop("max_completion_tokens", None)
    params.pop("max_completion_tokens", None)
    out: dict[str, Any] = {"model": model, "messages": turns, **rung_params}
    out["max_tokens"] = min(int(asked), max_tokens) if asked else max_tokens
    for name, target in (("temperature", "temperature"), ("top_p", "top_p")):
        if name in params:
            out[target] = params.pop(name)
    if "stop" in params:
        stop = params.pop("stop")
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if "tools" in params:
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in params.pop("tools")
        ]
    choice = _anthropic_tool_choice(params.pop("tool_choice", None))
    if choice is not None:
        out["tool_choice"] = choice
    if params.pop("parallel_tool_calls", None) is False and "tool_choice" in out:
        out["tool_choice"]["disable_parallel_tool_use"] = True
    response_format = params.pop("response_format", None) or {}
    if response_format.get("type") == "json_object":
        system.append("Answer with a single JSON object and nothing else.")
    elif response_format.get("type") == "json_schema":
        schema = json.dumps(response_format["json_schema"].get("schema", {}))
        system.append(
            f"Answer with a single JSON object that follows this JSON schema, and nothing else: {schema}"
        )
    if "user" in params:
        out["metadata"] = {"user_id": params.pop("user")}
    # OpenAI-only settings that change nothing about the answer's content
    for name in ("seed", "store", "service_tier", "prompt_cache_key", "safety_identifier", "metadata"):
        params.pop(name, None)
    if params:
        raise ValueError(f"{', '.join(sorted(params))}: no Anthropic equivalent for this rung")
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    return out
