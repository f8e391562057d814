"""The path with callback handlers attached: LangChain's own rules, decided faster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage

from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

T = TypeVar("T")


class Plain(BaseCallbackHandler):
    pass


class Streaming(BaseCallbackHandler):
    """A streaming handler as LangChain recognizes one (astream_events, LangGraph messages)."""

    def tap_output_iter(self, run_id: Any, output: Iterator[T]) -> Iterator[T]:
        return output

    def tap_output_aiter(self, run_id: Any, output: AsyncIterator[T]) -> AsyncIterator[T]:
        return output


def _cascade(**fields: Any) -> CascadeChatModel:
    return CascadeChatModel(
        rungs=[{"model": ScriptedChatModel(model_name="m", replies=[Reply("hi")])}], tracing=False, **fields
    )


@pytest.mark.parametrize("handlers", [[], [Plain()], [Streaming()], [Plain(), Streaming()]])
@pytest.mark.parametrize("kwargs", [{}, {"stream": True}, {"stream": False}])
@pytest.mark.parametrize("fields", [{}, {"streaming": True}, {"disable_streaming": True}])
@pytest.mark.parametrize("async_api", [False, True])
def test_should_stream_agrees_with_langchain(
    handlers: list[BaseCallbackHandler], kwargs: dict[str, Any], fields: dict[str, Any], async_api: bool
) -> None:
    llm = _cascade(**fields)
    manager = CallbackManager(handlers=handlers).on_chat_model_start({}, [[HumanMessage("x")]])[0]
    ours = llm._should_stream(async_api=async_api, run_manager=manager, **kwargs)
    theirs = BaseChatModel._should_stream(llm, async_api=async_api, run_manager=manager, **kwargs)
    assert ours == theirs
    # twice: the second answer comes from the per-class memory
    assert llm._should_stream(async_api=async_api, run_manager=manager, **kwargs) == theirs


def test_generate_takes_a_run_manager_as_langchain_reads_it() -> None:
    import inspect

    assert "run_manager" in inspect.signature(_cascade()._generate).parameters
    assert "run_manager" in inspect.signature(_cascade()._agenerate).parameters


def test_totals_reach_the_caller_and_not_the_handlers() -> None:
    seen: list[Any] = []

    class Recorder(BaseCallbackHandler):
        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            seen.append(response.generations[0][0].message.usage_metadata)

    llm = CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(model_name="a", replies=[Reply("x", confidence=0.1)]),
                "scorer": {"kind": "logprob"},
                "threshold": 0.5,
            },
            {"model": ScriptedChatModel(model_name="b", replies=[Reply("y")])},
        ],
        tracing=False,
    )
    result = llm.generate([[HumanMessage("q")]], callbacks=[Recorder()])
    message = result.generations[0][0].message
    assert message.usage_metadata is not None
    rung_totals = [u["total_tokens"] for u in seen if u is not None]
    # two rung runs report their own usage; the cascade's run reports none (no double count)
    assert len(seen) == 3
    assert len(rung_totals) == 2
    assert message.usage_metadata["total_tokens"] == sum(rung_totals)
    assert result.llm_output is not None
    assert result.llm_output["token_usage"]["total_tokens"] == sum(rung_totals)
    assert "cascade_token_usage" not in result.llm_output


def _switches() -> dict[str, Any]:
    """Every way LangChain adds handlers to a call that brings none, each as a context."""
    import contextlib

    from langchain_core.callbacks import get_usage_metadata_callback
    from langchain_core.globals import set_debug
    from langchain_core.tracers.context import collect_runs

    @contextlib.contextmanager
    def debug() -> Iterator[None]:
        set_debug(True)
        try:
            yield
        finally:
            set_debug(False)

    @contextlib.contextmanager
    def env(name: str) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(name, "true")
            mp.setenv("LANGSMITH_API_KEY", "lsv2-test-not-a-key")
            yield

    @contextlib.contextmanager
    def instrumented() -> Iterator[None]:
        from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor

        instrumentor = LangChainInstrumentor()
        instrumentor.instrument()
        try:
            yield
        finally:
            instrumentor.uninstrument()

    return {
        "none": contextlib.nullcontext,
        "otel_instrumentation": instrumented,
        "debug": debug,
        "langsmith_env": lambda: env("LANGSMITH_TRACING"),
        "langchain_v2_env": lambda: env("LANGCHAIN_TRACING_V2"),
        "usage_callback": get_usage_metadata_callback,
        "collect_runs": collect_runs,
    }


@pytest.mark.parametrize("switch", list(_switches()))
@pytest.mark.parametrize("verbose", [False, True])
def test_the_quick_handler_check_agrees_with_langchains_configure(switch: str, verbose: bool) -> None:
    """The fast path skips ``CallbackManager.configure`` when nothing would add a handler; it
    must see every handler LangChain would add (a missed one loses the caller's usage or trace)."""
    from langchain_cascade_router._runs import langchain_adds_handlers

    with _switches()[switch]():
        theirs = bool(CallbackManager.configure(None, None, verbose).handlers)
        assert langchain_adds_handlers(verbose) == theirs
        if switch == "usage_callback":
            assert theirs  # the check is able to see a hook
