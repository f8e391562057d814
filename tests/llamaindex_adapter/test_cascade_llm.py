"""CascadeLLM as a drop-in LlamaIndex LLM."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.cascade_router.testing import ScriptedLLM
from pydantic import BaseModel

from cascade_router import CascadeExhaustedError, CascadeStreamError, JudgeScorer, LogprobScorer
from cascade_router.testing import Reply

CONFIDENT = Reply("Paris", confidence=0.95)
UNSURE = Reply("Lyon, maybe", confidence=0.2)


def ladder(cheap: list[Any], strong: list[Any], **kw: Any) -> tuple[CascadeLLM, ScriptedLLM, ScriptedLLM]:
    c = ScriptedLLM(model_name="cheap-model", replies=cheap)
    s = ScriptedLLM(model_name="strong-model", replies=strong)
    llm = CascadeLLM(
        rungs=[
            {"model": c, "name": "cheap", "scorer": LogprobScorer(), "threshold": 0.8},
            {"model": s, "name": "strong"},
        ],
        **kw,
    )
    return llm, c, s


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def test_accept_escalate_and_transparency() -> None:
    llm, cheap, strong = ladder([CONFIDENT, UNSURE], [Reply("Paris", usage=(30, 2))])
    first = llm.chat(user("Capital of France?"))
    assert first.message.content == "Paris"
    assert first.additional_kwargs["cascade"]["answered_by"] == {
        "rung": 0,
        "name": "cheap",
        "model": "cheap-model",
    }
    second = llm.chat(user("Capital of France?"))
    cascade = second.additional_kwargs["cascade"]
    assert [a["decision"] for a in cascade["attempts"]] == ["escalate", "accept"]
    assert cascade["answered_by"]["model"] == "strong-model"
    assert second.raw == {"model": "strong-model", "id": "scripted-1"}  # the answering rung's raw response
    assert (cheap.calls, strong.calls) == (2, 1)


def test_fallback_exhausted_and_best() -> None:
    llm, _, _ = ladder([ConnectionError("503")], ["S"])
    response = llm.chat(user("q"))
    assert response.additional_kwargs["cascade"]["attempts"][0]["error"] == "ConnectionError: 503"
    llm, _, _ = ladder([UNSURE], [RuntimeError("down")])
    with pytest.raises(CascadeExhaustedError, match="RuntimeError: down"):
        llm.chat(user("q"))
    llm, _, _ = ladder([UNSURE], [RuntimeError("down")], on_exhausted="best")
    assert llm.chat(user("q")).message.content == "Lyon, maybe"


def test_complete_stream_and_async() -> None:
    llm, _, _ = ladder([UNSURE], ["Paris is the capital"])
    assert llm.complete("q").text == "Paris is the capital"
    llm, _, _ = ladder([UNSURE], ["Paris is the capital"])
    responses = list(llm.stream_chat(user("q")))
    assert len([r for r in responses if r.delta]) > 1  # the strong rung streamed live
    assert responses[-1].message.content == "Paris is the capital"
    assert responses[-1].additional_kwargs["cascade"]["answered_by"]["name"] == "strong"
    llm, _, _ = ladder([CONFIDENT], ["S"])
    assert "".join(r.delta or "" for r in llm.stream_complete("q")) == "Paris"


async def test_async_twins() -> None:
    llm, _, _ = ladder([UNSURE], ["Paris is the capital"])
    assert (await llm.achat(user("q"))).message.content == "Paris is the capital"
    llm, _, _ = ladder([CONFIDENT], ["S"])
    assert (await llm.acomplete("q")).text == "Paris"
    llm, _, _ = ladder([UNSURE], ["Paris is the capital"])
    stream = await llm.astream_chat(user("q"))
    responses = [r async for r in stream]
    assert responses[-1].message.content == "Paris is the capital"


def test_stream_failure_after_output_is_a_clear_error() -> None:
    llm, _, _ = ladder([UNSURE], [Reply("one two three", fail_after_chunks=1)])
    with pytest.raises(CascadeStreamError):
        list(llm.stream_chat(user("q")))


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


MULTIPLY = FunctionTool.from_defaults(fn=multiply)


def test_chat_with_tools_and_predict_and_call() -> None:
    call = Reply(tool_calls=[{"name": "multiply", "args": {"a": 6, "b": 7}}])
    llm, _cheap, _ = ladder([call], ["S"])
    response = llm.chat_with_tools([MULTIPLY], user_msg="6 times 7?")
    calls = llm.get_tool_calls_from_response(response)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("multiply", {"a": 6, "b": 7})]
    assert response.additional_kwargs["cascade"]["attempts"][0]["reason"] == "valid tool call"
    llm, _, _ = ladder([call], ["S"])
    assert str(llm.predict_and_call([MULTIPLY], user_msg="6 times 7?")) == "42"


def test_unknown_or_malformed_tool_calls_escalate() -> None:
    wrong = Reply(tool_calls=[{"name": "rm_rf", "args": {}}])
    broken = Reply(invalid_tool_calls=[{"name": "multiply", "args": "{a: 6"}])
    good = Reply(tool_calls=[{"name": "multiply", "args": {"a": 6, "b": 7}}])
    for bad, reason in (
        (wrong, "invalid: tool call names unknown tool 'rm_rf'"),
        (broken, "invalid: malformed tool call: unparseable tool call"),
    ):
        llm, _, _ = ladder([bad], [good])
        response = llm.chat_with_tools([MULTIPLY], user_msg="6 times 7?")
        assert response.additional_kwargs["cascade"]["attempts"][0]["reason"].startswith(reason)
        assert llm.get_tool_calls_from_response(response)[0].tool_kwargs == {"a": 6, "b": 7}


class City(BaseModel):
    name: str
    population: int


def test_structured_predict_escalates_on_invalid_output() -> None:
    bad = Reply(tool_calls=[{"name": "City", "args": {"name": "Paris", "population": "lots"}}])
    good = Reply(tool_calls=[{"name": "City", "args": {"name": "Paris", "population": 2100000}}])
    llm, _, strong = ladder([bad], [good])
    city = llm.structured_predict(City, PromptTemplate("Describe {city}."), city="Paris")
    assert city == City(name="Paris", population=2100000)
    assert strong.calls == 1


def test_metadata_tells_the_truth() -> None:
    small = ScriptedLLM(model_name="a", replies=["x"], context_window=4096, num_output=256)
    big = ScriptedLLM(model_name="b", replies=["y"], context_window=128000, function_calling=False)
    meta = CascadeLLM(rungs=[{"model": small}, {"model": big}]).metadata
    assert (meta.context_window, meta.num_output) == (4096, 256)
    assert meta.is_function_calling_model is False
    assert meta.model_name == "cascade[a>b]"


def test_judge_is_any_llamaindex_llm_and_costs_count() -> None:
    judge = ScriptedLLM(model_name="judge", replies=[Reply("No", usage=(40, 1))])
    cheap = ScriptedLLM(model_name="cheap", replies=["4"])
    llm = CascadeLLM(
        rungs=[
            {"model": cheap, "scorer": JudgeScorer(judge=judge), "threshold": 0.5},
            {"model": ScriptedLLM(model_name="strong", replies=["4!"])},
        ]
    )
    attempt = llm.chat(user("2+2?")).additional_kwargs["cascade"]["attempts"][0]
    assert (attempt["method"], attempt["score"], attempt["scorer_input_tokens"]) == ("judge", 0.0, 40)


def test_config_errors_and_from_config(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"rungs\[0\]\.model: cannot resolve 'nope:x'"):
        CascadeLLM(rungs=[{"model": "nope:x"}])
    with pytest.raises(ValueError, match=r"rungs\[0\]\.model: expected a LlamaIndex LLM"):
        CascadeLLM(rungs=[{"model": 3}])
    llm = CascadeLLM.from_config(
        {
            "name": "bot",
            "rungs": [
                {"model": ScriptedLLM(replies=[CONFIDENT]), "scorer": {"kind": "logprob"}, "threshold": 0.5},
                {"model": ScriptedLLM(replies=["S"])},
            ],
        }
    )
    assert llm.chat(user("q")).message.content == "Paris"
    assert llm.engine.name == "bot"


def test_as_settings_llm_in_a_query_engine() -> None:
    llm, cheap, _ = ladder([Reply("The office is in Lyon.", confidence=0.95)], ["unused"])
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    try:
        index = VectorStoreIndex.from_documents(
            [Document(text="Our office is in Lyon."), Document(text="We sell tea.")]
        )
        answer = index.as_query_engine().query("Where is the office?")
    finally:
        Settings.llm = None  # type: ignore[assignment]
    assert str(answer) == "The office is in Lyon."
    # the retrieved context reached the cheap rung
    assert any("Our office is in Lyon." in (m.content or "") for m in cheap.received[0])


async def test_function_agent_loop() -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    cheap = ScriptedLLM(
        model_name="cheap",
        replies=[
            Reply(tool_calls=[{"name": "multiply", "args": {"a": 6, "b": 7}}]),
            Reply("It is 41?", confidence=0.3),
        ],
        cycle=False,
    )
    strong = ScriptedLLM(model_name="strong", replies=["6 times 7 is 42."], cycle=False)
    llm = CascadeLLM(
        rungs=[
            {"model": cheap, "scorer": LogprobScorer(), "threshold": 0.8, "name": "cheap"},
            {"model": strong, "name": "strong"},
        ]
    )
    agent = FunctionAgent(tools=[MULTIPLY], llm=llm)
    result = await agent.run(user_msg="What is 6 times 7?")
    assert str(result) == "6 times 7 is 42."
    assert (cheap.calls, strong.calls) == (2, 1)
    # the strong rung saw the tool's result in the conversation
    assert any("42" in (m.content or "") for m in strong.received[0] if m.role == MessageRole.TOOL)


def test_stream_traces_under_the_span_of_the_call_not_of_the_consumer(spans: Any) -> None:
    from opentelemetry import trace

    llm, _, _ = ladder([UNSURE], ["Paris is the capital"])
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("query") as query_span:
        stream = llm.stream_chat(user("q"))  # LlamaIndex returns the generator here...
    with tracer.start_as_current_span("elsewhere"):
        responses = list(stream)  # ...and it runs later, under another span
    assert responses[-1].message.content == "Paris is the capital"
    workflow = next(s for s in spans.get_finished_spans() if s.name.startswith("invoke_workflow"))
    assert workflow.parent is not None
    assert workflow.parent.span_id == query_span.get_span_context().span_id


@pytest.mark.parametrize("mode", ["chat", "achat", "stream_chat", "complete"])
async def test_a_token_counter_counts_each_token_once(mode: str) -> None:
    from llama_index.core.callbacks import CallbackManager, TokenCountingHandler

    counter = TokenCountingHandler(tokenizer=str.split)
    manager = CallbackManager([counter])
    cheap = ScriptedLLM(
        model_name="cheap-model",
        replies=[Reply(UNSURE.text, confidence=0.2, usage=(10, 5))],
        callback_manager=manager,
    )
    strong = ScriptedLLM(
        model_name="strong-model", replies=[Reply("Paris", usage=(12, 7))], callback_manager=manager
    )
    llm = CascadeLLM(
        rungs=[
            {"model": cheap, "name": "cheap", "scorer": LogprobScorer(), "threshold": 0.8},
            {"model": strong, "name": "strong"},
        ],
        callback_manager=manager,
    )
    if mode == "chat":
        cascade = llm.chat(user("q")).additional_kwargs["cascade"]
    elif mode == "achat":
        cascade = (await llm.achat(user("q"))).additional_kwargs["cascade"]
    elif mode == "stream_chat":
        cascade = list(llm.stream_chat(user("q")))[-1].additional_kwargs["cascade"]
    else:
        cascade = llm.complete("q").additional_kwargs["cascade"]
    # One LLM event per rung call, none for the cascade itself (which repeated the answer's text
    # and so counted the strong rung's tokens twice).
    completions = [e.completion for e in counter.llm_token_counts]
    assert completions == [f"assistant: {UNSURE.text}", "assistant: Paris"]
    assert cascade["usage"] == {"input_tokens": 22, "output_tokens": 12}  # the total, on the answer
    # Handlers added to the shared manager later are called too.
    late = TokenCountingHandler(tokenizer=str.split)
    manager.add_handler(late)
    llm.chat(user("q"))
    assert len(late.llm_token_counts) == 2
