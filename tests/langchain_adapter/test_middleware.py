"""CascadeMiddleware in a real create_agent loop with tools."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from cascade_router import LogprobScorer
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeMiddleware
from langchain_cascade_router.testing import ScriptedChatModel

calls: list[str] = []


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    calls.append(city)
    return f"It is sunny in {city}."


def build() -> tuple[object, ScriptedChatModel, ScriptedChatModel]:
    cheap = ScriptedChatModel(
        model_name="cheap-model",
        replies=[
            # Turn 1: a well-formed tool call, accepted by the default tool-call policy.
            Reply(tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}}]),
            # Turn 2: a final answer the cheap model is unsure of: escalates.
            Reply("Maybe rainy?", confidence=0.2),
        ],
        cycle=False,
    )
    strong = ScriptedChatModel(model_name="strong-model", replies=["It is sunny in Paris."], cycle=False)
    agent = create_agent(
        model=cheap,
        tools=[get_weather],
        middleware=[
            CascadeMiddleware(
                rungs=[
                    {"model": cheap, "scorer": LogprobScorer(), "threshold": 0.8, "name": "cheap"},
                    {"model": strong},
                ]
            )
        ],
    )
    return agent, cheap, strong


def check(messages: list[object], cheap: ScriptedChatModel, strong: ScriptedChatModel) -> None:
    ai = [m for m in messages if isinstance(m, AIMessage)]
    tools = [m for m in messages if isinstance(m, ToolMessage)]
    assert len(ai) == 2
    assert ai[0].tool_calls[0]["name"] == "get_weather"
    assert ai[0].response_metadata["cascade"]["answered_by"]["name"] == "cheap"
    assert tools[0].content == "It is sunny in Paris."
    assert ai[1].content == "It is sunny in Paris."
    assert ai[1].response_metadata["model_name"] == "strong-model"
    assert [a["decision"] for a in ai[1].response_metadata["cascade"]["attempts"]] == ["escalate", "accept"]
    assert (cheap.calls, strong.calls) == (2, 1)
    # The strong rung saw the tool result: it ran inside the same agent step.
    assert any(isinstance(m, ToolMessage) for m in strong.received[0])


def test_agent_loop_sync() -> None:
    calls.clear()
    agent, cheap, strong = build()
    result = agent.invoke({"messages": [("user", "What is the weather in Paris?")]})  # type: ignore[attr-defined]
    check(result["messages"], cheap, strong)
    assert calls == ["Paris"]


async def test_agent_loop_async() -> None:
    calls.clear()
    agent, cheap, strong = build()
    result = await agent.ainvoke({"messages": [("user", "What is the weather in Paris?")]})  # type: ignore[attr-defined]
    check(result["messages"], cheap, strong)
