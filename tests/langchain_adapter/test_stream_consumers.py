"""Each token reaches a stream consumer exactly once, and only from an accepted answer (or the
live final rung): ``stream``, ``astream``, ``astream_events`` v2 and LangGraph's ``messages`` and
``updates`` modes, for ``CascadeChatModel`` as an agent's model and for ``CascadeMiddleware``, in
a real ``create_agent`` loop (issue 11)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk

from cascade_router import JudgeScorer
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel, CascadeMiddleware
from langchain_cascade_router.testing import ScriptedChatModel

REJECTED = "Lyon surely"
ACCEPTED = "Paris is the capital"
INPUT: Any = {"messages": [("user", "What is the capital of France?")]}


def _rungs(scored_by: str) -> list[dict[str, Any]]:
    """A cheap rung whose answer is rejected (by its logprobs, or by a self-check judge saying
    "Nope"), then a strong final rung."""
    if scored_by == "logprob":
        cheap = ScriptedChatModel(model_name="cheap", replies=[Reply(REJECTED, confidence=0.1)])
        scorer: Any = {"kind": "logprob"}
    else:
        cheap = ScriptedChatModel(model_name="cheap", replies=[Reply(REJECTED), Reply("Nope")])
        scorer = JudgeScorer()
    strong = ScriptedChatModel(model_name="strong", replies=[Reply(ACCEPTED)])
    return [
        {"model": cheap, "scorer": scorer, "threshold": 0.5, "name": "cheap"},
        {"model": strong, "name": "strong"},
    ]


def _text(chunks: list[Any]) -> str:
    return "".join(c.content for c in chunks if isinstance(c.content, str))


def _assert_once(text: str) -> None:
    assert "Lyon" not in text, f"a rejected answer reached the stream: {text!r}"
    assert "Nope" not in text, f"a judge's verdict reached the stream: {text!r}"
    assert text == ACCEPTED, f"expected the accepted answer exactly once, got {text!r}"


def _agent(kind: str, scored_by: str) -> Any:
    """A create_agent agent whose model is a CascadeChatModel, or whose model calls go through
    CascadeMiddleware."""
    rungs = _rungs(scored_by)
    if kind == "model":
        return create_agent(model=CascadeChatModel(rungs=rungs, tracing=False), tools=[])
    return create_agent(
        model=rungs[0]["model"], tools=[], middleware=[CascadeMiddleware(rungs=rungs, tracing=False)]
    )


@pytest.mark.parametrize("kind", ["model", "middleware"])
@pytest.mark.parametrize("scored_by", ["logprob", "judge"])
@pytest.mark.parametrize("use_async", [False, True])
def test_agent_messages_mode(kind: str, scored_by: str, use_async: bool) -> None:
    agent = _agent(kind, scored_by)

    async def collect() -> list[Any]:
        return [m async for m, _ in agent.astream(INPUT, stream_mode="messages")]

    if use_async:
        streamed = asyncio.run(collect())
    else:
        streamed = [m for m, _ in agent.stream(INPUT, stream_mode="messages")]
    _assert_once(_text(streamed))


@pytest.mark.parametrize("kind", ["model", "middleware"])
def test_agent_updates_mode_holds_only_the_accepted_answer(kind: str) -> None:
    agent = _agent(kind, "logprob")
    messages = [
        m
        for update in agent.stream(INPUT, stream_mode="updates")
        for node in update.values()
        if isinstance(node, dict)
        for m in node.get("messages", [])
    ]
    assert [m.content for m in messages if isinstance(m, AIMessage)] == [ACCEPTED]


def _messages(value: Any) -> list[Any]:
    """Every message inside nested lists, dicts and LangGraph Commands."""
    if isinstance(value, AIMessage):
        return [value]
    if isinstance(value, dict):
        return [m for v in value.values() for m in _messages(v)]
    if isinstance(value, list | tuple):
        return [m for v in value for m in _messages(v)]
    update = getattr(value, "update", None)
    return _messages(update) if update is not None else []


async def _events(runnable: Any, value: Any) -> list[dict[str, Any]]:
    return [e async for e in runnable.astream_events(value, version="v2")]


@pytest.mark.parametrize("scored_by", ["logprob", "judge"])
def test_astream_events_streams_the_cascades_run_once_and_shows_every_rung(scored_by: str) -> None:
    llm = CascadeChatModel(rungs=_rungs(scored_by), tracing=False)
    events = asyncio.run(_events(llm, "What is the capital of France?"))
    tokens = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert {e["name"] for e in tokens} == {"CascadeChatModel"}
    _assert_once(_text([e["data"]["chunk"] for e in tokens]))
    starts = {tuple(e["tags"]) for e in events if e["event"] == "on_chat_model_start"}
    # the rejected buffered rung and the live final rung are both there, tagged, as children
    assert any("cascade:rung:0" in tags for tags in starts), starts
    assert any("cascade:rung:1" in tags for tags in starts), starts
    cascade_run = next(e["run_id"] for e in events if e["name"] == "CascadeChatModel")
    rung_runs = [
        e for e in events if e["event"] == "on_chat_model_start" and e["name"] == "ScriptedChatModel"
    ]
    assert rung_runs, "no rung run in astream_events"
    assert all(e["parent_ids"][-1] == cascade_run for e in rung_runs)


@pytest.mark.parametrize("kind", ["model", "middleware"])
def test_astream_events_of_an_agent_never_streams_a_rejected_answer(kind: str) -> None:
    agent = _agent(kind, "logprob")
    events = asyncio.run(_events(agent, INPUT))
    streamed = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    text = _text(streamed)
    assert "Lyon" not in text, text
    if kind == "model":
        _assert_once(text)  # the live final rung streams, through the cascade's run
    else:
        assert text == ""  # the middleware's accepted answer arrives whole, as the node's output
        outputs = [e["data"].get("output") for e in events if e["event"] == "on_chain_end"]
        answers = {m.content for m in _messages(outputs) if isinstance(m, AIMessage)}
        assert answers == {ACCEPTED}


def test_stream_and_astream_directly() -> None:
    llm = CascadeChatModel(rungs=_rungs("judge"), tracing=False)
    chunks = list(llm.stream("q"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    _assert_once(_text(chunks))

    async def collect() -> list[Any]:
        return [c async for c in CascadeChatModel(rungs=_rungs("judge"), tracing=False).astream("q")]

    _assert_once(_text(asyncio.run(collect())))
