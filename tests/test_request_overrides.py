"""Per-request overrides (issue 11): start at a given rung (a premium user straight to the strong
model) or use other thresholds for one call, in the core and both adapters; the rungs never see
the override arguments."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cascade_router import CascadeLLM, cascade_records
from llama_index.llms.cascade_router.testing import ScriptedLLM

from cascade_router import Cascade
from cascade_router.testing import Reply, ScriptedBackend
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

SURE = Reply("Paris", confidence=0.7)  # accepted at 0.5, escalated at 0.9


def _specs(cheap: Any, strong: Any) -> list[dict[str, Any]]:
    return [
        {"model": cheap, "name": "cheap", "scorer": {"kind": "logprob"}, "threshold": 0.5},
        {"model": strong, "name": "strong"},
    ]


def _core() -> Cascade:
    return Cascade(
        _specs(ScriptedBackend("c", [SURE]), ScriptedBackend("s", ["strong answer"])), tracing=False
    )


def test_core_start_at_skips_the_rungs_below() -> None:
    cascade = _core()
    assert cascade.invoke("q").answered_by.name == "cheap"
    for start in ("strong", 1):
        result = cascade.invoke("q", start_at=start)
        assert [a.name for a in result.attempts] == ["strong"]


def test_core_thresholds_for_one_request() -> None:
    cascade = _core()
    result = cascade.invoke("q", thresholds={"cheap": 0.9})
    assert [(a.name, a.decision) for a in result.attempts] == [("cheap", "escalate"), ("strong", "accept")]
    assert result.attempts[0].threshold == 0.9
    assert cascade.invoke("q").attempts[0].threshold == 0.5  # the next request: the rung's own


def test_core_stream_and_async_take_them_too() -> None:
    cascade = _core()
    events = list(cascade.stream("q", start_at="strong"))
    assert [a.name for a in events[-1].result.attempts] == ["strong"]  # type: ignore[attr-defined]
    result = asyncio.run(cascade.ainvoke("q", thresholds={0: 0.9}))
    assert result.answered_by.name == "strong"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_at": "nope"}, "no rung named 'nope'"),
        ({"start_at": 5}, "no rung 5"),
        ({"thresholds": {"cheap": 1.5}}, "expected a number in [0, 1]"),
        ({"thresholds": {"other": 0.5}}, "no rung named 'other'"),
    ],
)
def test_bad_overrides_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _core().invoke("q", **kwargs)


def _lc() -> CascadeChatModel:
    cheap = ScriptedChatModel(model_name="c", replies=[SURE])
    strong = ScriptedChatModel(model_name="s", replies=["strong answer"])
    return CascadeChatModel(rungs=_specs(cheap, strong), tracing=False)


def _names(message: Any) -> list[str]:
    return [a["name"] for a in message.response_metadata["cascade"]["attempts"]]


def test_langchain_kwargs_bind_and_configurable() -> None:
    llm = _lc()
    assert _names(llm.invoke("q")) == ["cheap"]
    assert _names(llm.invoke("q", start_at="strong")) == ["strong"]
    assert _names(llm.bind(start_at="strong").invoke("q")) == ["strong"]
    premium = llm.with_config(configurable={"cascade_start_at": "strong"})
    assert _names(premium.invoke("q")) == ["strong"]
    strict = llm.with_config(configurable={"cascade_thresholds": {"cheap": 0.9}})
    assert _names(strict.invoke("q")) == ["cheap", "strong"]
    chunks = list(llm.stream("q", config={"configurable": {"cascade_start_at": "strong"}}))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert _names(merged) == ["strong"]
    assert _names(asyncio.run(llm.ainvoke("q", thresholds={"cheap": 0.9}))) == ["cheap", "strong"]


def test_langchain_rungs_never_receive_the_override_arguments() -> None:
    seen: list[dict[str, Any]] = []

    class Recording(ScriptedChatModel):
        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            seen.append(kwargs)
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    llm = CascadeChatModel(
        rungs=_specs(
            Recording(model_name="c", replies=[SURE]), ScriptedChatModel(model_name="s", replies=["x"])
        ),
        tracing=False,
    )
    llm.invoke("q", thresholds={"cheap": 0.1})
    assert seen
    assert all("thresholds" not in k and "start_at" not in k for k in seen), seen


def test_llamaindex_chat_takes_them() -> None:
    llm = CascadeLLM(
        rungs=_specs(ScriptedLLM(model_name="c", replies=[SURE]), ScriptedLLM(model_name="s", replies=["x"]))
    )
    message = [ChatMessage(role=MessageRole.USER, content="q")]
    assert [a["name"] for a in llm.chat(message).additional_kwargs["cascade"]["attempts"]] == ["cheap"]
    response = llm.chat(message, start_at="strong")
    assert [a["name"] for a in response.additional_kwargs["cascade"]["attempts"]] == ["strong"]
    response = llm.chat(message, thresholds={"cheap": 0.9})
    assert [a["name"] for a in response.additional_kwargs["cascade"]["attempts"]] == ["cheap", "strong"]


def test_llamaindex_structured_predict_takes_them_and_rungs_never_see_them() -> None:
    from llama_index.core.prompts import PromptTemplate
    from pydantic import BaseModel

    class City(BaseModel):
        name: str

    seen: list[dict[str, Any]] = []

    class Recording(ScriptedLLM):
        def chat_with_tools(self, tools: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            seen.append(kwargs)
            return super().chat_with_tools(tools, **kwargs)

    call = Reply(tool_calls=[{"name": "City", "args": {"name": "Paris"}}])
    cheap, strong = Recording(model_name="c", replies=[call]), Recording(model_name="s", replies=[call])
    llm = CascadeLLM(rungs=_specs(cheap, strong))
    with cascade_records() as records:
        parsed = llm.structured_predict(City, PromptTemplate("capital?"), llm_kwargs={"start_at": "strong"})
    assert parsed == City(name="Paris")
    assert [a["name"] for a in records[-1]["attempts"]] == ["strong"]
    assert seen
    assert all("start_at" not in k for k in seen), seen
