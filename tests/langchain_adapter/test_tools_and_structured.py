"""Tool binding, the tool-call scoring policy, and structured output validated per rung."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.runnables import RunnableBinding
from langchain_core.tools import tool
from pydantic import BaseModel

from cascade_router import LogprobScorer
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return f"sunny in {city}"


class Person(BaseModel):
    name: str
    age: int


def ladder(
    cheap: list[Any], strong: list[Any], **rung: Any
) -> tuple[CascadeChatModel, ScriptedChatModel, ScriptedChatModel]:
    c = ScriptedChatModel(model_name="cheap", replies=cheap)
    s = ScriptedChatModel(model_name="strong", replies=strong)
    llm = CascadeChatModel(
        rungs=[{"model": c, "scorer": LogprobScorer(), "threshold": 0.8, **rung}, {"model": s}]
    )
    return llm, c, s


CALL = Reply(tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}}])


def test_bind_tools_binds_on_every_rung_and_returns_a_binding() -> None:
    llm, cheap, strong = ladder([CALL], ["s"])
    bound = llm.bind_tools([get_weather], tool_choice="any")
    assert isinstance(bound, RunnableBinding)
    message = bound.invoke("weather in Paris?")
    assert message.tool_calls[0]["name"] == "get_weather"
    # The cheap rung received its tools through its own bind_tools.
    assert cheap.calls == 1
    assert strong.calls == 0


def test_valid_tool_call_is_accepted_by_default_without_logprobs() -> None:
    llm, _, _ = ladder([CALL], ["s"])
    message = llm.bind_tools([get_weather]).invoke("q")
    first = message.response_metadata["cascade"]["attempts"][0]
    assert (first["decision"], first["reason"]) == ("accept", "valid tool call")


def test_tool_call_can_be_scored() -> None:
    llm, _, _ = ladder([CALL], ["s"], on_tool_call="score")
    message = llm.bind_tools([get_weather]).invoke("q")
    first = message.response_metadata["cascade"]["attempts"][0]
    # Providers return no logprobs for tool calls: a missing signal, which escalates.
    assert first["reason"] == "missing signal: no logprobs returned"
    assert message.content == "s"


def test_tool_call_can_always_escalate() -> None:
    llm, _, _ = ladder([CALL], ["s"], on_tool_call="escalate")
    message = llm.bind_tools([get_weather]).invoke("q")
    assert (
        message.response_metadata["cascade"]["attempts"][0]["reason"] == "tool call (on_tool_call=escalate)"
    )


def test_unknown_tool_name_escalates() -> None:
    wrong = Reply(tool_calls=[{"name": "delete_everything", "args": {}}])
    llm, _, _ = ladder([wrong], ["s"])
    message = llm.bind_tools([get_weather]).invoke("q")
    assert message.response_metadata["cascade"]["attempts"][0]["reason"] == (
        "invalid: tool call names unknown tool 'delete_everything'"
    )


def test_malformed_tool_call_escalates() -> None:
    broken = Reply(invalid_tool_calls=[{"name": "get_weather", "args": "{city: Par", "error": "bad JSON"}])
    llm, _, _ = ladder([broken], ["s"])
    message = llm.bind_tools([get_weather]).invoke("q")
    assert (
        message.response_metadata["cascade"]["attempts"][0]["reason"]
        == "invalid: malformed tool call: get_weather: bad JSON"
    )


def person_call(args: dict[str, Any], confidence: float | None = None) -> Reply:
    return Reply(tool_calls=[{"name": "Person", "args": args}], confidence=confidence)


def test_structured_output_accepts_valid_cheap_answer() -> None:
    # Structured output is scored like any answer: a confident one is accepted...
    llm, _, strong = ladder([person_call({"name": "Ada", "age": 36}, confidence=0.95)], ["unused"])
    assert llm.with_structured_output(Person).invoke("who?") == Person(name="Ada", age=36)
    assert strong.calls == 0


def test_structured_output_without_a_score_escalates() -> None:
    # ... and one its scorer cannot score (no logprobs) is a missing signal (on_missing).
    llm, _, strong = ladder(
        [person_call({"name": "Ada", "age": 36})], [person_call({"name": "Bo", "age": 1})]
    )
    assert llm.with_structured_output(Person).invoke("who?") == Person(name="Bo", age=1)
    assert strong.calls == 1


def test_structured_output_that_fails_validation_escalates() -> None:
    llm, _, strong = ladder(
        [person_call({"name": "Ada", "age": "old"})], [person_call({"name": "Ada", "age": 36})]
    )
    structured = llm.with_structured_output(Person, include_raw=True)
    out = structured.invoke("who?")
    assert out["parsed"] == Person(name="Ada", age=36)
    assert out["parsing_error"] is None
    first = out["raw"].response_metadata["cascade"]["attempts"][0]
    assert first["decision"] == "escalate"
    assert first["reason"].startswith("invalid: structured output did not parse")
    assert strong.calls == 1


def test_structured_output_text_instead_of_tool_call_escalates() -> None:
    llm, _, _ = ladder([Reply("Ada, 36", confidence=0.99)], [person_call({"name": "Ada", "age": 36})])
    assert llm.with_structured_output(Person).invoke("who?") == Person(name="Ada", age=36)


def test_structured_output_json_schema_dict() -> None:
    schema = {
        "title": "Person",
        "description": "A person",
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    llm, _, _ = ladder([person_call({"name": "Ada", "age": 36}, confidence=0.95)], ["unused"])
    assert llm.with_structured_output(schema).invoke("who?") == {"name": "Ada", "age": 36}


def test_structured_output_rejects_unknown_arguments() -> None:
    llm, _, _ = ladder(["x"], ["y"])
    with pytest.raises(ValueError, match="unsupported arguments"):
        llm.with_structured_output(Person, temperature=0)


def test_structured_output_json_mode_parses_text_and_escalates_on_bad_json() -> None:
    llm, _, strong = ladder([Reply("{name: Ada", confidence=0.99)], [Reply('{"name": "Ada", "age": 36}')])
    out = llm.with_structured_output(Person, method="json_mode", include_raw=True).invoke("who?")
    assert out["parsed"] == Person(name="Ada", age=36)
    first = out["raw"].response_metadata["cascade"]["attempts"][0]
    assert first["reason"].startswith("invalid: structured output did not parse: OutputParserException")
    assert strong.calls == 1
