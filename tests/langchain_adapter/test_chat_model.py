"""CascadeChatModel as a drop-in LangChain chat model."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from cascade_router import CascadeExhaustedError, CascadeStreamError, JudgeScorer, LogprobScorer
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel
from tests.langchain_adapter.conftest import CONFIDENT, UNSURE, Factory


def attempts(message: AIMessage) -> list[tuple[str, str]]:
    return [(a["name"], a["decision"]) for a in message.response_metadata["cascade"]["attempts"]]


def test_confident_cheap_answer_is_accepted(make_ladder: Factory) -> None:
    llm, (cheap, strong) = make_ladder([CONFIDENT], ["S"])
    message = llm.invoke("Capital of France?")
    assert message.content == "Paris"
    assert message.response_metadata["model_name"] == "cheap-model"
    assert attempts(message) == [("cheap", "accept")]
    assert (cheap.calls, strong.calls) == (1, 0)


def test_unsure_cheap_answer_escalates(make_ladder: Factory) -> None:
    llm, _ = make_ladder([UNSURE], [Reply("Paris", usage=(20, 2))])
    message = llm.invoke("Capital of France?")
    assert message.content == "Paris"
    assert message.response_metadata["model_name"] == "strong-model"
    cascade = message.response_metadata["cascade"]
    assert cascade["answered_by"] == {"rung": 1, "name": "strong", "model": "strong-model"}
    first = cascade["attempts"][0]
    assert first["decision"] == "escalate"
    assert first["method"] == "logprob"
    assert first["score"] == pytest.approx(0.3)
    assert first["threshold"] == 0.8
    assert set(first) >= {
        "rung",
        "name",
        "model",
        "score",
        "method",
        "threshold",
        "decision",
        "error",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_s",
    }
    # usage_metadata sums every attempt: the rejected cheap answer's tokens were paid for too.
    cheap_in = first["input_tokens"]
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == cheap_in + 20
    assert message.usage_metadata["output_tokens"] == first["output_tokens"] + 2


def test_in_a_chain_with_prompt_and_parser(make_ladder: Factory) -> None:
    llm, _ = make_ladder([CONFIDENT], ["S"])
    chain = ChatPromptTemplate.from_messages([("human", "Capital of {country}?")]) | llm | StrOutputParser()
    assert chain.invoke({"country": "France"}) == "Paris"


async def test_ainvoke_batch_abatch(make_ladder: Factory) -> None:
    llm, _ = make_ladder([CONFIDENT, UNSURE], ["S"])
    assert (await llm.ainvoke("q")).content == "Paris"
    llm2, _ = make_ladder([CONFIDENT, UNSURE], ["S"])
    out = llm2.batch(["a", "b"], config={"max_concurrency": 1})
    assert [m.content for m in out] == ["Paris", "S"]
    llm3, _ = make_ladder([CONFIDENT, UNSURE], ["S"])
    out = await llm3.abatch(["a", "b"], config={"max_concurrency": 1})
    assert [m.content for m in out] == ["Paris", "S"]


def test_stream_and_aggregate(make_ladder: Factory) -> None:
    llm, _ = make_ladder([UNSURE], ["Paris is the capital"])
    chunks = list(llm.stream("q"))
    assert len([c for c in chunks if c.content]) > 1  # the strong rung streamed live
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content == "Paris is the capital"
    assert total.response_metadata["model_name"] == "strong-model"
    assert [a["decision"] for a in total.response_metadata["cascade"]["attempts"]] == ["escalate", "accept"]
    assert total.usage_metadata is not None
    assert total.usage_metadata["total_tokens"] > 0


async def test_astream(make_ladder: Factory) -> None:
    llm, _ = make_ladder([CONFIDENT], ["S"])
    chunks = [c async for c in llm.astream("q")]
    assert "".join(str(c.content) for c in chunks) == "Paris"
    assert any(c.response_metadata.get("model_name") == "cheap-model" for c in chunks)


class KwargsSpy(GenericFakeChatModel):
    """Records the stop sequences and keyword arguments of every call."""

    seen: list[dict[str, Any]]

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        self.seen.append({"stop": stop, **kwargs})
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def test_stop_and_call_kwargs_reach_every_rung() -> None:
    a = KwargsSpy(messages=iter([AIMessage("x")]), seen=[])
    b = KwargsSpy(messages=iter([AIMessage("y")]), seen=[])
    llm = CascadeChatModel(
        rungs=[{"model": a, "scorer": lambda m, r: 0.0, "threshold": 0.5}, {"model": b}], temperature=0.2
    )
    llm.invoke("q", stop=["END"], seed=7)
    for spy in (a, b):
        assert spy.seen == [{"stop": ["END"], "seed": 7, "temperature": 0.2}]


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs: dict[UUID, tuple[UUID | None, str, list[str]]] = {}

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name", "?")
        self.runs[run_id] = (parent_run_id, name, tags or [])


def test_rung_and_judge_runs_are_children_of_the_cascade_run() -> None:
    cheap = ScriptedChatModel(model_name="cheap-model", replies=["Paris"])
    judge = ScriptedChatModel(model_name="judge-model", replies=["No"])
    strong = ScriptedChatModel(model_name="strong-model", replies=["Paris!"])
    llm = CascadeChatModel(
        rungs=[{"model": cheap, "scorer": JudgeScorer(judge=judge), "threshold": 0.5}, {"model": strong}]
    )
    recorder = RunRecorder()
    message = llm.invoke("q", config={"callbacks": [recorder], "tags": ["user-tag"]})
    parents = [(rid, parent) for rid, (parent, _, _) in recorder.runs.items()]
    roots = [rid for rid, parent in parents if parent is None]
    assert len(roots) == 1
    root = roots[0]
    children = [rid for rid, parent in parents if parent == root]
    assert len(children) == 3  # cheap, its judge, strong
    tags = sorted(t for rid in children for t in recorder.runs[rid][2] if t.startswith("cascade:"))
    assert tags == ["cascade:judge:0", "cascade:rung:0", "cascade:rung:1"]
    assert all("user-tag" in recorder.runs[rid][2] for rid in children)  # inheritable tags flow down
    judge_attempt = message.response_metadata["cascade"]["attempts"][0]
    assert judge_attempt["method"] == "judge"
    assert judge_attempt["scorer_input_tokens"] > 0
    assert message.usage_metadata is not None
    total_in = sum(
        a["input_tokens"] + a["scorer_input_tokens"] for a in message.response_metadata["cascade"]["attempts"]
    )
    assert message.usage_metadata["input_tokens"] == total_in


def test_llm_output_and_ls_params_name_models(make_ladder: Factory) -> None:
    llm, _ = make_ladder([UNSURE], ["S"])
    result = llm.generate([[HumanMessage("q")]])
    assert result.llm_output is not None
    assert result.llm_output["model_name"] == "strong-model"
    assert result.llm_output["token_usage"]["total_tokens"] > 0
    params = llm._get_ls_params()
    assert params["ls_model_name"] == "cascade[cheap>strong]"
    assert params["ls_provider"] == "cascade_router"


def test_annotate_appends_the_answering_model(make_ladder: Factory) -> None:
    llm, _ = make_ladder([UNSURE], ["Paris"], annotate=True)
    assert llm.invoke("q").content == "Paris\n\n— answered by strong-model"
    llm2, _ = make_ladder([UNSURE], ["Paris"], annotate=True)
    assert "".join(str(c.content) for c in llm2.stream("q")) == "Paris\n\n— answered by strong-model"


def test_rung_error_falls_back(make_ladder: Factory) -> None:
    llm, _ = make_ladder([ConnectionError("HTTP 529 overloaded")], ["S"])
    message = llm.invoke("q")
    first = message.response_metadata["cascade"]["attempts"][0]
    assert (first["decision"], first["error"]) == ("error", "ConnectionError: HTTP 529 overloaded")
    assert message.content == "S"


def test_exhausted_ladder_raises(make_ladder: Factory) -> None:
    llm, _ = make_ladder([UNSURE], [RuntimeError("down")])
    with pytest.raises(CascadeExhaustedError, match="rung 1 'strong' \\(strong-model\\): RuntimeError: down"):
        llm.invoke("q")


def test_exhausted_ladder_best(make_ladder: Factory) -> None:
    llm, _ = make_ladder([UNSURE], [RuntimeError("down")], on_exhausted="best")
    message = llm.invoke("q")
    assert message.content == "Lyon, probably"
    assert message.response_metadata["cascade"]["outcome"] == "best"


def test_stream_failure_before_output_falls_back() -> None:
    broken = ScriptedChatModel(model_name="broken", replies=[Reply("x", fail_after_chunks=0)])
    backup = ScriptedChatModel(model_name="backup", replies=["saved"])
    llm = CascadeChatModel(rungs=[{"model": broken, "validate_output": False}, {"model": backup}])
    assert "".join(str(c.content) for c in llm.stream("q")) == "saved"


def test_stream_failure_after_output_raises_clearly(make_ladder: Factory) -> None:
    llm, _ = make_ladder([UNSURE], [Reply("one two three", fail_after_chunks=2)])
    got = []
    with pytest.raises(CascadeStreamError):
        for chunk in llm.stream("q"):
            got.append(chunk.content)
    assert "".join(map(str, got)) == "one two"


def test_unresolvable_model_string_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"rungs\[0\]\.model: cannot resolve model 'nosuchprovider:model-x'"):
        CascadeChatModel(rungs=[{"model": "nosuchprovider:model-x"}])


def test_model_string_resolves_with_init_chat_model(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("langchain_openai", reason="langchain-openai is what resolves 'openai:' strings")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    llm = CascadeChatModel(rungs=[{"model": "openai:gpt-4o-mini"}])
    assert type(llm.rungs[0].model).__name__ == "ChatOpenAI"
    assert llm.engine.rungs[0].provider == "openai"
    assert llm.engine.rungs[0].model == "gpt-4o-mini"


def test_rung_model_must_be_a_chat_model() -> None:
    with pytest.raises(ValueError, match=r"rungs\[0\]\.model: expected a LangChain chat model .* got int"):
        CascadeChatModel(rungs=[{"model": 42}])


def test_empty_ladder_names_the_field() -> None:
    with pytest.raises(ValueError, match="rungs: the ladder is empty"):
        CascadeChatModel(rungs=[])


def test_from_config_yaml_resolves_strings(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("langchain_openai", reason="langchain-openai is what resolves 'openai:' strings")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    path = tmp_path / "ladder.yaml"
    path.write_text(
        "name: bot\nrungs:\n  - model: openai:gpt-4o-mini\n    scorer: {kind: logprob}\n    threshold: 0.8\n"
        "  - model: openai:gpt-4o\n"
    )
    llm = CascadeChatModel.from_config(path)
    assert llm.name == "bot"
    assert [r.model for r in llm.engine.rungs] == ["gpt-4o-mini", "gpt-4o"]
    assert isinstance(llm.rungs[0].scorer, LogprobScorer)


def test_from_config_dict_with_objects(make_ladder: Factory) -> None:
    cheap = ScriptedChatModel(model_name="c", replies=[CONFIDENT])
    llm = CascadeChatModel.from_config(
        {"rungs": [{"model": cheap, "scorer": {"kind": "logprob"}, "threshold": 0.5}, {"model": cheap}]}
    )
    assert llm.invoke("q").content == "Paris"


def test_secrets_do_not_leak_into_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("langchain_openai", reason="needs a real provider class holding a key")
    from langchain_openai import ChatOpenAI

    secret = "sk-secret-value-should-never-appear"
    strong = ChatOpenAI(
        model="gpt-4o-mini", api_key=secret, base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=0.5
    )
    llm = CascadeChatModel(rungs=[{"model": strong}])
    with pytest.raises(CascadeExhaustedError) as info:
        llm.invoke("q")
    assert secret not in str(info.value)
    assert secret not in repr(info.value.attempts)
    assert secret not in repr(llm._identifying_params)


async def test_rung_timeout_falls_back_sync_and_async() -> None:
    def build() -> CascadeChatModel:
        slow = ScriptedChatModel(model_name="slow", replies=[Reply("late", confidence=0.99, delay=3.0)])
        fast = ScriptedChatModel(model_name="fast", replies=["on time"])
        return CascadeChatModel(
            rungs=[
                {"model": slow, "timeout": 0.1, "scorer": LogprobScorer(), "threshold": 0.5},
                {"model": fast},
            ]
        )

    recorder = RunRecorder()
    message = build().invoke("q", config={"callbacks": [recorder]})
    assert message.content == "on time"
    first = message.response_metadata["cascade"]["attempts"][0]
    assert first["error"] == "RungTimeoutError: rung 'slow' gave no answer within 0.1 s"
    # The timed-out rung ran in a worker thread; its run still nests under the cascade's.
    roots = [rid for rid, (parent, _, _) in recorder.runs.items() if parent is None]
    assert len(roots) == 1
    assert len(recorder.runs) == 3
    message = await build().ainvoke("q")
    assert message.content == "on time"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream", "batch"])
async def test_callbacks_count_each_token_once(mode: str) -> None:
    """Rung runs report their own usage to callback handlers and the cascade's run none, so a
    handler that sums a trace (LangSmith, get_usage_metadata_callback) counts every token once, under
    the model that spent it, while the returned message carries the request's total."""
    cheap = ScriptedChatModel(model_name="cheap", replies=[Reply("no", confidence=0.2, usage=(10, 5))])
    strong = ScriptedChatModel(model_name="strong", replies=[Reply("yes", usage=(12, 7))])
    llm = CascadeChatModel(
        rungs=[{"model": cheap, "scorer": LogprobScorer(), "threshold": 0.8}, {"model": strong}]
    )
    with get_usage_metadata_callback() as counted:
        if mode == "invoke":
            message = llm.invoke("q")
        elif mode == "ainvoke":
            message = await llm.ainvoke("q")
        elif mode == "batch":
            (message,) = llm.batch(["q"])
        else:
            chunks = list(llm.stream("q")) if mode == "stream" else [c async for c in llm.astream("q")]
            message = chunks[0]
            for chunk in chunks[1:]:
                message = message + chunk  # type: ignore[assignment]
    assert message.usage_metadata is not None
    assert (message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]) == (22, 12)
    assert {k: (v["input_tokens"], v["output_tokens"]) for k, v in counted.usage_metadata.items()} == {
        "cheap": (10, 5),
        "strong": (12, 7),
    }
