"""The server as OpenAI clients see it: the official ``openai`` client and LangChain's
``ChatOpenAI`` pointed at a real uvicorn server whose ladders are scripted models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from cascade_router import LogprobScorer
from cascade_router.chat_body import ChatBody
from cascade_router.testing import Reply, ScriptedBackend
from tests.server.live import InThread, serving

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class Rungs:
    def __init__(self) -> None:
        self.cheap = ScriptedBackend(
            "cheap-model",
            [Reply("Paris is the capital of France.", confidence=0.95), Reply("Lyon", confidence=0.2)],
        )
        self.strong = ScriptedBackend("strong-model", [Reply("Paris, surely.", usage=(7, 3))])

    def config(self) -> dict[str, Any]:
        return {
            "ladders": {
                "support-bot": {
                    "rungs": [
                        {"name": "cheap", "model": self.cheap, "scorer": LogprobScorer(), "threshold": 0.7},
                        {"name": "strong", "model": self.strong},
                    ]
                },
                "strong-only": {"rungs": [{"name": "strong", "model": self.strong}]},
            }
        }


@pytest.fixture
def rungs() -> Rungs:
    return Rungs()


@pytest.fixture
def server(rungs: Rungs) -> Iterator[InThread]:
    with serving(rungs.config()) as server:
        yield server


def client(server: InThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-anything", max_retries=0)


def test_answer_names_the_model_that_answered_and_sums_usage(server: InThread, rungs: Rungs) -> None:
    c = client(server)
    accepted = c.chat.completions.with_raw_response.create(
        model="support-bot", messages=[{"role": "user", "content": "capital of France?"}]
    )
    first = accepted.parse()
    assert first.model == "cheap-model"
    assert first.choices[0].message.content == "Paris is the capital of France."
    assert accepted.headers["x-cascade-answered-by"] == "cheap-model"
    assert accepted.headers["x-cascade-escalations"] == "0"
    assert accepted.headers["x-cascade-request-id"] == first.id.removeprefix("chatcmpl-")

    escalated = c.chat.completions.with_raw_response.create(
        model="support-bot", messages=[{"role": "user", "content": "capital of France?"}]
    )
    second = escalated.parse()
    assert second.model == "strong-model"
    assert escalated.headers["x-cascade-answered-by"] == "strong-model"
    assert escalated.headers["x-cascade-escalations"] == "1"
    record = second.model_extra["cascade"]  # type: ignore[index]
    assert [a["decision"] for a in record["attempts"]] == ["escalate", "accept"]
    # usage sums both attempts: the cheap rung's (5 + 2 tokens, estimated) and the strong one's
    cheap = record["attempts"][0]
    assert second.usage is not None
    assert second.usage.prompt_tokens == cheap["input_tokens"] + 7
    assert second.usage.completion_tokens == cheap["output_tokens"] + 3


def test_stream_with_usage_and_the_record_in_the_last_chunk(server: InThread) -> None:
    c = client(server)
    chunks = list(
        c.chat.completions.create(
            model="support-bot",
            messages=[{"role": "user", "content": "capital?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Paris is the capital of France."
    finishing = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [ch.choices[0].finish_reason for ch in finishing] == ["stop"]
    assert finishing[0].model_extra["cascade"]["answered_by"]["model"] == "cheap-model"  # type: ignore[index]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0
    # without include_usage no usage chunk is sent
    plain = list(
        c.chat.completions.create(
            model="strong-only", messages=[{"role": "user", "content": "q"}], stream=True
        )
    )
    assert all(ch.usage is None for ch in plain)
    assert "".join(ch.choices[0].delta.content or "" for ch in plain if ch.choices) == "Paris, surely."


def test_the_final_rung_streams_live_chunk_by_chunk(rungs: Rungs) -> None:
    rungs.strong = ScriptedBackend("strong-model", [Reply("one two three four", chunk_delay=0.01)])
    with serving(rungs.config()) as server:
        chunks = list(
            client(server).chat.completions.create(
                model="strong-only", messages=[{"role": "user", "content": "q"}], stream=True
            )
        )
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert pieces == ["one", " two", " three", " four"]


def test_tools_and_settings_reach_the_rung_as_sent(server: InThread, rungs: Rungs) -> None:
    rungs.strong.script.replies = [
        Reply("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}])
    ]
    c = client(server)
    answer = c.chat.completions.create(
        model="strong-only",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="auto",
        temperature=0.2,
        max_tokens=50,
        stop=["\n\n"],
        user="u-1",
        metadata={"team": "support"},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments), call.id) == (  # type: ignore[union-attr]
        "get_weather",
        {"city": "Paris"},
        "call_1",
    )
    sent = rungs.strong.requests[-1]
    assert isinstance(sent.native, ChatBody)
    assert sent.native.params["tools"] == [WEATHER_TOOL]
    assert sent.native.params["temperature"] == 0.2
    assert sent.native.params["stop"] == ["\n\n"]
    assert sent.native.params["max_tokens"] == 50
    assert sent.tool_names == frozenset({"get_weather"})
    assert sent.metadata["team"] == "support"
    assert sent.metadata["user"] == "u-1"

    # the conversation goes on with the tool's answer: the rung gets the tool turn as sent
    rungs.strong.script.replies = [Reply("It is sunny in Paris.")]
    follow = c.chat.completions.create(
        model="strong-only",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert follow.choices[0].message.content == "It is sunny in Paris."
    sent = rungs.strong.requests[-1]
    assert isinstance(sent.native, ChatBody)
    assert sent.native.messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert [m.role for m in sent.messages] == ["user", "assistant", "tool"]
    assert "get_weather(" in sent.messages[1].content


def test_streamed_tool_calls(server: InThread, rungs: Rungs) -> None:
    rungs.strong.script.replies = [Reply("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}}])]
    chunks = list(
        client(server).chat.completions.create(
            model="strong-only",
            messages=[{"role": "user", "content": "weather in Oslo?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream=True,
        )
    )
    calls = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or ()]
    assert [(tc.function.name, tc.function.arguments) for tc in calls] == [  # type: ignore[union-attr]
        ("get_weather", '{"city": "Oslo"}')
    ]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
        "tool_calls"
    ]


def test_json_response_format_escalates_an_answer_that_is_not_json(rungs: Rungs) -> None:
    rungs.cheap = ScriptedBackend("cheap-model", [Reply("Sure! Here it is: {", confidence=0.99)])
    rungs.strong = ScriptedBackend("strong-model", ['{"capital": "Paris"}'])
    with serving(rungs.config()) as server:
        for response_format in (
            {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "c", "schema": {"type": "object"}}},
        ):
            answer = client(server).chat.completions.create(
                model="support-bot",
                messages=[{"role": "user", "content": "capital of France as JSON"}],
                response_format=response_format,  # type: ignore[arg-type]
            )
            assert json.loads(answer.choices[0].message.content or "") == {"capital": "Paris"}
            attempts = answer.model_extra["cascade"]["attempts"]  # type: ignore[index]
            assert "not JSON" in attempts[0]["reason"]
            assert rungs.cheap.requests[-1].native.params["response_format"] == response_format


def test_models_lists_the_ladders(server: InThread) -> None:
    c = client(server)
    assert sorted(m.id for m in c.models.list()) == ["strong-only", "support-bot"]
    assert c.models.retrieve("support-bot").id == "support-bot"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-4")


def test_chat_openai_invoke_stream_tools_and_structured_output(server: InThread, rungs: Rungs) -> None:
    llm = ChatOpenAI(model="support-bot", base_url=f"{server.url}/v1", api_key="sk-x", max_retries=0)  # type: ignore[arg-type]
    message = llm.invoke("capital of France?")
    assert message.content == "Paris is the capital of France."
    assert message.response_metadata["model_name"] == "cheap-model"
    assert message.usage_metadata is not None

    stream = list(llm.stream("capital of France?"))  # the script's second reply escalates
    assert "".join(str(c.content) for c in stream) == "Paris, surely."
    merged = stream[0]
    for chunk in stream[1:]:
        merged = merged + chunk  # type: ignore[assignment]
    assert isinstance(merged, AIMessageChunk)
    assert merged.response_metadata.get("model_name") == "strong-model"

    rungs.strong.script.replies = [Reply("", tool_calls=[{"name": "get_weather", "args": {"city": "Rome"}}])]
    strong = ChatOpenAI(model="strong-only", base_url=f"{server.url}/v1", api_key="sk-x", max_retries=0)  # type: ignore[arg-type]
    called = strong.bind_tools([WEATHER_TOOL]).invoke("weather in Rome?")
    assert called.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert called.tool_calls[0]["args"] == {"city": "Rome"}  # type: ignore[attr-defined]

    class Capital(BaseModel):
        country: str
        city: str

    rungs.strong.script.replies = [Reply('{"country": "France", "city": "Paris"}')]
    structured = strong.with_structured_output(Capital, method="json_schema").invoke("capital of France?")
    assert structured == Capital(country="France", city="Paris")
    sent = rungs.strong.requests[-1].native
    assert sent.params["response_format"]["type"] == "json_schema"

    rungs.strong.script.replies = [
        Reply("", tool_calls=[{"name": "Capital", "args": {"country": "Italy", "city": "Rome"}}])
    ]
    by_tool = strong.with_structured_output(Capital, method="function_calling").invoke("capital of Italy?")
    assert by_tool == Capital(country="Italy", city="Rome")


async def test_async_client_and_chat_openai(server: InThread) -> None:
    async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="sk", max_retries=0) as c:
        answer = await c.chat.completions.create(
            model="strong-only", messages=[{"role": "user", "content": "q"}]
        )
        assert answer.choices[0].message.content == "Paris, surely."
        stream = await c.chat.completions.create(
            model="strong-only", messages=[{"role": "user", "content": "q"}], stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
        assert text == "Paris, surely."
    llm = ChatOpenAI(
        model="strong-only",
        base_url=f"{server.url}/v1",
        api_key="sk",  # type: ignore[arg-type]
        max_retries=0,
        http_async_client=httpx.AsyncClient(),
    )
    assert (await llm.ainvoke("q")).content == "Paris, surely."
    assert "".join([str(c.content) async for c in llm.astream("q")]) == "Paris, surely."


def test_llamaindex_openai_like_chat_and_stream(server: InThread) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model="strong-only",
        api_base=f"{server.url}/v1",
        api_key="sk-any",
        is_chat_model=True,
        max_retries=0,
    )
    reply = llm.chat([ChatMessage(role="user", content="capital of France?")])
    assert reply.message.content == "Paris, surely."
    streamed = list(llm.stream_chat([ChatMessage(role="user", content="capital of France?")]))
    assert streamed[-1].message.content == "Paris, surely."
    assert llm.complete("capital of France?").text == "Paris, surely."
