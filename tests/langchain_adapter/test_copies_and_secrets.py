"""What users do with models (copies, pickles, bound copies) and where secrets must never show
up (reprs, serialization, errors, spans, log rows, metadata, logging output) (issue 10)."""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest
from langchain_core.load import dumpd
from langchain_openai import ChatOpenAI
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.cascade_router.testing import ScriptedLLM
from pydantic import BaseModel

from cascade_router import Cascade, JudgeScorer, LogprobScorer, Rung
from cascade_router.backends.openai import OpenAIBackend
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.testing import Reply, ScriptedBackend
from langchain_cascade_router import CascadeChatModel, CascadeMiddleware
from langchain_cascade_router.testing import ScriptedChatModel

KEY = "0123456789abcdef0123456789abcdef"  # a 32-hex key: no pattern recognises it
PASSWORD = "hunter2-Secret-pw"


def _judged() -> CascadeChatModel:
    judge = ScriptedChatModel(model_name="judge", replies=["Yes"])
    return CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(model_name="cheap", replies=["Paris"]),
                "scorer": JudgeScorer(judge=judge),
                "threshold": 0.5,
            },
            {"model": ScriptedChatModel(model_name="strong", replies=["Lyon"])},
        ]
    )


@pytest.mark.parametrize(
    "make_copy",
    [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m)), lambda m: m.model_copy(), copy.copy],
    ids=["deepcopy", "pickle", "model_copy", "copy"],
)
def test_a_copied_model_still_reaches_its_judge(make_copy: Any) -> None:
    clone = make_copy(_judged())
    message = clone.invoke("q")
    assert message.content == "Paris"
    first = message.response_metadata["cascade"]["attempts"][0]
    assert (first["decision"], first["method"]) == ("accept", "judge")


class Weather(BaseModel):
    """Weather in a city."""

    city: str


def test_a_copy_of_a_model_with_tools_bound_keeps_them() -> None:
    llm = CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(
                    model_name="m",
                    replies=[Reply(tool_calls=[{"name": "Weather", "args": {"city": "Oslo"}}])],
                )
            }
        ]
    )
    bound = llm.bind_tools([Weather]).bound  # type: ignore[attr-defined]
    for clone in (copy.deepcopy(bound), pickle.loads(pickle.dumps(bound))):
        assert clone._ladder.tool_names == frozenset({"Weather"})
        assert clone.invoke("q").tool_calls[0]["args"] == {"city": "Oslo"}


def test_model_copy_with_an_update_takes_effect() -> None:
    llm = _judged()
    clone = llm.model_copy(update={"on_exhausted": "best", "name": "renamed"})
    assert clone.engine.on_exhausted == "best"
    assert clone.engine.name == "renamed"
    assert llm.engine.on_exhausted == "raise"
    with pytest.raises(ValueError, match="unknown fields"):
        llm.model_copy(update={"no_such_field": 1})


def test_record_feedback_is_the_same_on_every_entry_point(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "f.db")
    chat = CascadeChatModel(
        rungs=[{"model": ScriptedChatModel(model_name="m", replies=["a"])}], decision_log=log
    )
    index = CascadeLLM(rungs=[{"model": ScriptedLLM(model_name="m", replies=["a"])}], decision_log=log)
    core = Cascade([{"model": ScriptedBackend("m", ["a"])}], decision_log=log)
    middleware = CascadeMiddleware(
        rungs=[{"model": ScriptedChatModel(model_name="m", replies=["a"])}], decision_log=log
    )
    ids = [
        chat.invoke("q").response_metadata["cascade"]["request_id"],
        index.complete("q").additional_kwargs["cascade"]["request_id"],
        core.invoke("q").request_id,
    ]
    for entry, request_id in zip((chat, index, core), ids, strict=True):
        entry.record_feedback(request_id, 0.5, comment="ok", rung=0)
    middleware.record_feedback(ids[0], True)
    log.flush()
    scores = [f["score"] for r in log.iter_records() for f in r["feedback"]]
    assert sorted(scores) == [0.5, 0.5, 0.5, 1.0]
    log.close()


def test_secrets_appear_nowhere(tmp_path: Path, spans: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'secrets.db'}"
    pg_url = f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/db"
    echo = ConnectionError(f"401 Unauthorized: incorrect API key provided: {KEY}")
    openai_rung = ChatOpenAI(
        model="gpt-4o-mini", api_key=KEY, base_url=f"http://bob:{PASSWORD}@127.0.0.1:1/v1", max_retries=0
    )
    chat = CascadeChatModel(
        rungs=[
            {"model": openai_rung, "scorer": LogprobScorer(), "threshold": 0.5, "timeout": 2},
            {"model": ScriptedChatModel(model_name="down", replies=[echo])},
            {"model": ScriptedChatModel(model_name="strong", replies=["Paris"])},
        ],
        decision_log=url,
    )
    core_backend = OpenAIBackend("gpt-4o-mini", api_key=KEY, base_url=f"http://bob:{PASSWORD}@127.0.0.1:1/v1")
    core = Cascade(
        [
            {"model": ScriptedBackend("down", [echo])},
            {
                "model": {
                    "provider": "openai",
                    "model": "x",
                    "api_key": KEY,
                    "base_url": "http://127.0.0.1:1/v1",
                }
            },
            {"model": ScriptedBackend("strong", ["Paris"])},
        ],
        decision_log=url,
    )
    llm = CascadeLLM(rungs=[{"model": ScriptedLLM(model_name="m", replies=["a"])}], decision_log=pg_url)
    shown: list[str] = [
        repr(chat),
        str(dumpd(chat)),
        repr(llm),
        str(llm.to_dict()),
        repr(core_backend),
        repr(core.backends[1]),
        repr(Rung(model={"provider": "openai", "model": "x", "api_key": KEY})),
        str(Rung(model={"provider": "openai", "model": "x", "api_key": KEY}).model_dump()),
        repr(DecisionLog(pg_url)),
    ]
    with caplog.at_level(logging.DEBUG):
        message = chat.invoke("q")
        result = core.invoke("q")
    shown += [str(message.response_metadata), str(result.to_dict()), str([a.error for a in result.attempts])]
    for span in spans.get_finished_spans():
        shown += [str(dict(span.attributes or {})), str(span.status.description), str(span.events)]
    log = chat.engine.decision_log
    assert log is not None
    log.flush()
    shown += [str(r) for r in log.iter_records()]
    # Ours only: the openai SDK's own DEBUG logging prints the request URL as given.
    shown += [r.getMessage() for r in caplog.records if r.name.startswith("cascade_router")]
    with pytest.raises(Exception) as info:  # noqa: PT011 - any error; its text is what is checked
        Rung(model="openai:x", api_key=KEY)  # type: ignore[call-arg]
    shown.append(str(info.value))
    everything = "\n".join(shown)
    assert "401 Unauthorized" in everything  # the error itself is there...
    assert KEY not in everything  # ...without the key it echoed
    assert PASSWORD not in everything
    log.close()


def _ladder_for_paths() -> CascadeChatModel:
    return CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(
                    model_name="cheap", replies=[Reply("Lyon", confidence=0.2, usage=(10, 5))]
                ),
                "scorer": LogprobScorer(),
                "threshold": 0.8,
            },
            {"model": ScriptedChatModel(model_name="strong", replies=[Reply("Paris", usage=(12, 7))])},
        ]
    )


def _shape(message: Any) -> tuple[Any, ...]:
    meta = dict(message.response_metadata)
    cascade = meta.pop("cascade")
    return (
        message.content,
        sorted(meta),
        meta["model_name"],
        message.usage_metadata,
        [(a["name"], a["decision"]) for a in cascade["attempts"]],
        message.id.startswith("lc_run--"),
    )


@pytest.mark.parametrize("use_async", [False, True])
async def test_the_unobserved_fast_path_returns_what_the_full_path_does(
    use_async: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.callbacks import get_usage_metadata_callback
    from langchain_core.language_models import BaseChatModel

    runs: list[str] = []
    for name in ("generate", "agenerate"):
        real = getattr(BaseChatModel, name)

        def spy(self: Any, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            runs.append(type(self).__name__)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(BaseChatModel, name, spy)

    async def ask(llm: CascadeChatModel) -> Any:
        return await llm.ainvoke("q") if use_async else llm.invoke("q")

    fast = await ask(_ladder_for_paths())
    assert runs == []  # no LangChain run at all: nothing was observing
    with get_usage_metadata_callback() as usage:
        full = await ask(_ladder_for_paths())
    assert runs  # a handler was attached: the cascade's run and its rungs' child runs
    assert usage.usage_metadata["cheap"]["input_tokens"] == 10  # the handler saw each rung once
    assert _shape(fast) == _shape(full)
    assert fast.usage_metadata == {"input_tokens": 22, "output_tokens": 12, "total_tokens": 34}


def test_a_global_llm_cache_takes_the_full_path() -> None:
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import set_llm_cache

    llm = _ladder_for_paths()
    set_llm_cache(InMemoryCache())
    try:
        assert not llm._unobserved(None)
        first = llm.invoke("q")
        assert llm.invoke("q").content == first.content == "Paris"
    finally:
        set_llm_cache(None)
    assert llm._unobserved(None)
