"""One scripted ladder through any entry point and any mode, for parity tests: the core
``Cascade``, LangChain's ``CascadeChatModel``, ``CascadeMiddleware`` in a ``create_agent`` agent
and LlamaIndex's ``CascadeLLM``, each in invoke, ainvoke, stream and astream."""

from __future__ import annotations

import uuid
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.cascade_router.testing import ScriptedLLM

from cascade_router import Cascade
from cascade_router.engine import Finished
from cascade_router.testing import ScriptedBackend
from langchain_cascade_router import CascadeChatModel, CascadeMiddleware
from langchain_cascade_router.testing import ScriptedChatModel

KINDS = ("core", "langchain", "middleware", "llamaindex")
MODES = ("invoke", "ainvoke", "stream", "astream")


@tool
def lookup(city: str) -> str:
    """Facts about a city."""
    return f"{city} is a city."


def build(kind: str, rungs: list[dict[str, Any]], **settings: Any) -> tuple[Any, list[Any]]:
    """The entry point, and each rung's fake model. Each rung spec holds ``replies`` (what its
    fake answers, in order) and rung options."""
    models: list[Any] = []
    specs = []
    for i, spec in enumerate(rungs):
        options = {k: v for k, v in spec.items() if k != "replies"}
        replies = spec["replies"]
        if kind == "core":
            model: Any = ScriptedBackend(f"m{i}", replies, cycle=False)
        elif kind in ("langchain", "middleware"):
            model = ScriptedChatModel(model_name=f"m{i}", replies=replies, cycle=False)
        else:
            model = ScriptedLLM(model_name=f"m{i}", replies=replies, cycle=False)
        models.append(model)
        specs.append({"model": model, "name": f"r{i}", **options})
    if kind == "core":
        return Cascade(specs, **settings), models
    if kind == "langchain":
        return CascadeChatModel(rungs=specs, **settings), models
    if kind == "middleware":
        # The run stops before any tool would run (a checkpointer makes that an interrupt), so
        # one request is one model call, as on the other entry points.
        agent = create_agent(
            model=models[0],
            tools=[lookup],
            middleware=[CascadeMiddleware(rungs=specs, **settings)],
            checkpointer=InMemorySaver(),
            interrupt_before=["tools"],
        )
        return agent, models
    return CascadeLLM(rungs=specs, **settings), models


async def answer(entry: Any, mode: str) -> tuple[str, list[dict[str, Any]]]:
    """(the answer's text, its attempts as dicts) for one request in ``mode``."""
    if isinstance(entry, CascadeChatModel):
        if mode in ("invoke", "ainvoke"):
            message = entry.invoke("q") if mode == "invoke" else await entry.ainvoke("q")
        else:
            chunks = list(entry.stream("q")) if mode == "stream" else [c async for c in entry.astream("q")]
            message = chunks[0]
            for chunk in chunks[1:]:
                message += chunk
        return str(message.content), message.response_metadata["cascade"]["attempts"]
    if isinstance(entry, CompiledStateGraph):
        config: Any = {"configurable": {"thread_id": uuid.uuid4().hex}}
        state: Any = {"messages": [("user", "q")]}
        if mode == "invoke":
            final = entry.invoke(state, config)
        elif mode == "ainvoke":
            final = await entry.ainvoke(state, config)
        elif mode == "stream":
            final = list(entry.stream(state, config, stream_mode="values"))[-1]
        else:
            final = [v async for v in entry.astream(state, config, stream_mode="values")][-1]
        last = final["messages"][-1]
        assert isinstance(last, AIMessage), final
        return str(last.content), last.response_metadata["cascade"]["attempts"]
    if isinstance(entry, CascadeLLM):
        if mode == "invoke":
            response: Any = entry.complete("q")
        elif mode == "ainvoke":
            response = await entry.acomplete("q")
        elif mode == "stream":
            response = list(entry.stream_complete("q"))[-1]
        else:
            response = [r async for r in await entry.astream_complete("q")][-1]
        return response.text, response.additional_kwargs["cascade"]["attempts"]
    if mode in ("invoke", "ainvoke"):
        result = entry.invoke("q") if mode == "invoke" else await entry.ainvoke("q")
        return result.output.text, [a.to_dict() for a in result.attempts]
    events = list(entry.stream("q")) if mode == "stream" else [e async for e in entry.astream("q")]
    finished = events[-1]
    assert isinstance(finished, Finished)
    text = "".join(
        e.native if hasattr(e, "native") else e.text if hasattr(e, "text") else e.output.text
        for e in events[:-1]
    )
    return text, [a.to_dict() for a in finished.result.attempts]
