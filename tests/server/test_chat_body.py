"""A chat-completions body carried to the rungs: sent as it came to OpenAI-compatible rungs,
translated for Anthropic's, checked as JSON when JSON was asked for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cascade_router import Cascade, CascadeExhaustedError
from cascade_router.backends.anthropic import AnthropicBackend
from cascade_router.backends.openai import OpenAIBackend
from cascade_router.chat_body import ChatBody, anthropic_body, chat_request, json_problem, plain_messages
from cascade_router.engine import Finished
from cascade_router.testing import Reply, ScriptedBackend
from tests.server.live import serving

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
    },
}
CONVERSATION: tuple[dict[str, Any], ...] = (
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "define"}, {"type": "text", "text": "cascade"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"word": "cascade"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "a series of stages"},
)


def test_a_rungs_max_tokens_caps_the_callers() -> None:
    body = ChatBody((), {"max_tokens": 500, "temperature": 0.3})
    assert body.payload({"max_tokens": 64, "temperature": 0}) == {"max_tokens": 64, "temperature": 0.3}
    assert ChatBody((), {"max_tokens": 10}).payload({"max_tokens": 64}) == {"max_tokens": 10}
    assert ChatBody((), {"max_completion_tokens": 900}).payload({"max_tokens": 64}) == {
        "max_tokens": 64,
        "max_completion_tokens": 64,
    }
    assert ChatBody((), {}).payload({"top_p": 0.5}) == {"top_p": 0.5}


def test_the_plain_view_for_judges() -> None:
    plain = plain_messages(CONVERSATION)
    assert [(m.role, m.content) for m in plain] == [
        ("system", "Be brief."),
        ("user", "define\ncascade"),
        ("assistant", 'lookup({"word": "cascade"})'),
        ("tool", "a series of stages"),
    ]
    request = chat_request(ChatBody(CONVERSATION, {"tools": [TOOL]}))
    assert request.tool_names == frozenset({"lookup"})


def test_json_problem_only_when_json_was_asked() -> None:
    asked = chat_request(
        ChatBody(({"role": "user", "content": "x"},), {"response_format": {"type": "json_object"}})
    )
    plain = chat_request(ChatBody(({"role": "user", "content": "x"},), {}))
    assert json_problem(asked, '{"a": 1}', False) is None
    assert "not JSON" in (json_problem(asked, "Sure: {", False) or "")
    assert "not an object" in (json_problem(asked, "[1]", False) or "")
    assert json_problem(asked, "", True) is None  # a tool call carries it
    assert json_problem(plain, "Sure: {", False) is None


def test_anthropic_translation() -> None:
    body = ChatBody(
        CONVERSATION,
        {
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "stop": "END",
            "max_tokens": 5000,
            "temperature": 0.1,
            "response_format": {"type": "json_object"},
            "user": "u1",
            "seed": 3,
        },
    )
    out = anthropic_body(body, "claude-haiku-4-5", 1024, {})
    assert out["model"] == "claude-haiku-4-5"
    assert out["max_tokens"] == 1024  # the rung's max_tokens caps the caller's
    assert out["stop_sequences"] == ["END"]
    assert out["temperature"] == 0.1
    assert out["tools"] == [
        {"name": "lookup", "description": "Look a word up", "input_schema": TOOL["function"]["parameters"]}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert out["metadata"] == {"user_id": "u1"}
    assert out["system"].startswith("Be brief.")
    assert "JSON object" in out["system"]
    assert out["messages"] == [
        {"role": "user", "content": "define\ncascade"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "lookup", "input": {"word": "cascade"}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "a series of stages"}],
        },
    ]
    with pytest.raises(ValueError, match="logit_bias: no Anthropic equivalent"):
        anthropic_body(ChatBody(CONVERSATION, {"logit_bias": {"1": 2}}), "m", 10, {})
    backend = AnthropicBackend("claude-haiku-4-5", api_key="sk-ant-test", max_tokens=99)
    assert backend.payload(chat_request(body))["max_tokens"] == 99


def test_openai_rungs_send_the_body_and_assemble_streamed_tool_calls() -> None:
    """An OpenAIBackend rung whose provider is another cascade server (OpenAI-compatible, with a
    scripted model behind it): the body goes through unchanged and the streamed tool call comes
    back whole through the real openai SDK."""
    inner = ScriptedBackend(
        "inner",
        [
            Reply("", tool_calls=[{"name": "lookup", "args": {"word": "cascade"}, "id": "call_9"}]),
            Reply('{"word": "cascade"}'),
        ],
    )
    with serving({"ladders": {"inner": {"rungs": [{"model": inner}]}}}) as server:
        backend = OpenAIBackend(
            "inner", base_url=f"{server.url}/v1", api_key="sk-x", logprobs=False, max_tokens=50
        )
        outer = Cascade([{"model": backend}])
        try:
            request = chat_request(
                ChatBody(CONVERSATION, {"tools": [TOOL], "max_tokens": 80, "stop": ["\n"]})
            )
            events = list(outer.stream(request))
            result = events[-1]
            assert isinstance(result, Finished)
            (call,) = result.result.output.tool_calls
            assert (call.name, dict(call.args), call.id) == ("lookup", {"word": "cascade"}, "call_9")
            sent = inner.requests[-1].native
            assert isinstance(sent, ChatBody)
            assert sent.messages == CONVERSATION  # as sent, explicit nulls and content parts included
            assert sent.params["max_tokens"] == 50  # capped by the outer rung's own
            assert sent.params["stop"] == ["\n"]
            asked_json = chat_request(
                ChatBody(
                    ({"role": "user", "content": "word?"},), {"response_format": {"type": "json_object"}}
                )
            )
            assert json.loads(outer.invoke(asked_json).output.text) == {"word": "cascade"}
            # an answer that is not JSON is invalid, on the last rung too: the inner server says
            # so (502, with the reason), and the outer rung fails over it
            inner.script.replies = [Reply("not json at all")]
            with pytest.raises(CascadeExhaustedError, match="not JSON"):
                outer.invoke(asked_json)
        finally:
            backend.close()
