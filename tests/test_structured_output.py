"""Structured output the caller asks for (issue 11): it is scored like any answer, a text answer
never comes back as None, ``include_raw`` shows the parse error, and LlamaIndex rungs that do not
call functions answer through a text program."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.prompts import PromptTemplate
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.cascade_router.testing import ScriptedLLM
from pydantic import BaseModel

from cascade_router.errors import CascadeExhaustedError
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel


class City(BaseModel):
    name: str


def _call(name: str, confidence: float | None = None) -> Reply:
    return Reply(tool_calls=[{"name": "City", "args": {"name": name}}], confidence=confidence)


def _lc(*rungs: dict[str, Any]) -> CascadeChatModel:
    return CascadeChatModel(rungs=list(rungs), tracing=False)


# -- LangChain ---------------------------------------------------------------------------------


def test_a_text_answer_raises_instead_of_returning_none() -> None:
    llm = _lc({"model": ScriptedChatModel(model_name="a", replies=[Reply("Paris")])})
    with pytest.raises(CascadeExhaustedError, match="structured output did not parse"):
        llm.with_structured_output(City).invoke("q")


def test_include_raw_shows_the_parse_error() -> None:
    llm = _lc({"model": ScriptedChatModel(model_name="a", replies=[Reply("Paris")])})
    out = llm.with_structured_output(City, include_raw=True).invoke("q")
    assert out["parsed"] is None
    assert out["raw"].content == "Paris"
    assert "no structured output" in str(out["parsing_error"])


def test_include_raw_with_a_parsed_answer() -> None:
    llm = _lc({"model": ScriptedChatModel(model_name="a", replies=[_call("Paris")])})
    out = llm.with_structured_output(City, include_raw=True).invoke("q")
    assert out["parsed"] == City(name="Paris")
    assert out["parsing_error"] is None


def test_structured_output_is_scored_by_the_rungs_scorer() -> None:
    llm = _lc(
        {
            "model": ScriptedChatModel(model_name="cheap", replies=[_call("Lyon", confidence=0.1)]),
            "scorer": {"kind": "logprob"},
            "threshold": 0.5,
        },
        {"model": ScriptedChatModel(model_name="strong", replies=[_call("Paris")])},
    )
    out = llm.with_structured_output(City, include_raw=True).invoke("q")
    assert out["parsed"] == City(name="Paris")
    first = out["raw"].response_metadata["cascade"]["attempts"][0]
    assert first["decision"] == "escalate"
    assert first["method"] == "logprob"
    assert first["reason"].startswith("score 0.1")


def test_an_agents_tool_call_is_still_accepted_by_on_tool_call() -> None:
    llm = _lc(
        {
            "model": ScriptedChatModel(model_name="cheap", replies=[_call("Lyon", confidence=0.1)]),
            "scorer": {"kind": "logprob"},
            "threshold": 0.5,
        },
        {"model": ScriptedChatModel(model_name="strong", replies=[_call("Paris")])},
    )
    message = llm.bind_tools([City]).invoke("q")
    assert message.tool_calls[0]["args"] == {"name": "Lyon"}
    assert message.response_metadata["cascade"]["attempts"][0]["reason"] == "valid tool call"


# -- LlamaIndex --------------------------------------------------------------------------------

PROMPT = PromptTemplate("Which city is the capital of {country}?")


def test_a_rung_that_does_not_call_functions_answers_through_a_text_program() -> None:
    text_rung = ScriptedLLM(model_name="t", replies=['{"name": "Rome"}'], function_calling=False)
    llm = CascadeLLM(rungs=[{"model": text_rung}])
    assert llm.structured_predict(City, PROMPT, country="Italy") == City(name="Rome")
    sent = text_rung.received[-1][-1].content or ""
    assert "Which city is the capital of Italy?" in sent
    assert '"name"' in sent, "the schema's format instructions were not in the prompt"


def test_a_text_answer_escalates_and_nothing_parsing_is_a_clear_error() -> None:
    llm = CascadeLLM(
        rungs=[
            {"model": ScriptedLLM(model_name="a", replies=["Paris, I think"])},
            {"model": ScriptedLLM(model_name="b", replies=['{"name": "Paris"}'], function_calling=False)},
        ]
    )
    assert llm.structured_predict(City, PROMPT, country="France") == City(name="Paris")
    nothing = CascadeLLM(rungs=[{"model": ScriptedLLM(model_name="a", replies=["Paris, I think"])}])
    with pytest.raises(CascadeExhaustedError, match="structured output did not parse"):
        nothing.structured_predict(City, PROMPT, country="France")
    with pytest.raises(CascadeExhaustedError, match="structured output did not parse"):
        nothing.as_structured_llm(City).complete("capital of France?")


def test_llamaindex_structured_output_is_scored() -> None:
    llm = CascadeLLM(
        rungs=[
            {
                "model": ScriptedLLM(model_name="cheap", replies=[_call("Lyon", confidence=0.1)]),
                "scorer": {"kind": "logprob"},
                "threshold": 0.5,
            },
            {"model": ScriptedLLM(model_name="strong", replies=[_call("Paris")])},
        ]
    )
    assert llm.structured_predict(City, PROMPT, country="France") == City(name="Paris")
