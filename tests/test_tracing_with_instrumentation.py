"""With the official OpenTelemetry LangChain instrumentation also on: one tree, and the documented
switch (inference_spans=False) that keeps tracing backends from counting tokens twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel, LogprobScorer
from langchain_cascade_router.testing import ScriptedChatModel
from tests.conftest import PROVIDER


@pytest.fixture
def instrumented() -> Iterator[None]:
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=PROVIDER)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def build(**kw: object) -> CascadeChatModel:
    return CascadeChatModel(
        name="geo",
        rungs=[
            {
                "model": ScriptedChatModel(model_name="cheap", replies=[Reply("no", confidence=0.2)]),
                "scorer": LogprobScorer(),
                "threshold": 0.8,
            },
            {"model": ScriptedChatModel(model_name="strong", replies=["yes"])},
        ],
        **kw,  # type: ignore[arg-type]
    )


def llm_tokens(spans: InMemorySpanExporter) -> int:
    """What a backend that sums gen_ai.usage over a trace's LLM spans would report."""
    return sum(
        int((s.attributes or {}).get("gen_ai.usage.input_tokens", 0))  # type: ignore[arg-type]
        for s in spans.get_finished_spans()
        if (s.attributes or {}).get("gen_ai.operation.name") == "chat"
    )


@pytest.mark.usefixtures("instrumented")
def test_one_tree_beside_the_instrumentation(spans: InMemorySpanExporter) -> None:
    message = build().invoke("q")
    got = spans.get_finished_spans()
    names = {s.context.span_id: s.name for s in got}
    edges = sorted((s.name, names.get(s.parent.span_id) if s.parent else None) for s in got)
    assert edges == sorted(
        [
            ("chat cascade[cheap>strong]", None),  # the instrumentation's span for the cascade's own run
            ("invoke_workflow geo", "chat cascade[cheap>strong]"),
            ("cascade.rung 0 cheap", "invoke_workflow geo"),
            ("chat cheap", "cascade.rung 0 cheap"),
            ("cascade.rung 1 strong", "invoke_workflow geo"),
            ("chat strong", "cascade.rung 1 strong"),
        ]
    )
    # The cascade's own run reports no usage to callbacks (its rung runs report theirs), so the
    # cascade's inference spans hold every token once. This instrumentation (1.3b0) still puts
    # one nested rung call's tokens on its span for the cascade run: a backend summing every chat
    # span counts that call twice.
    assert message.usage_metadata is not None
    ours = sum(
        int((s.attributes or {}).get("gen_ai.usage.input_tokens", 0))  # type: ignore[arg-type]
        for s in spans.get_finished_spans()
        if s.name in ("chat cheap", "chat strong")
    )
    assert ours == message.usage_metadata["input_tokens"] == 2
    assert llm_tokens(spans) == ours + 1


@pytest.mark.usefixtures("instrumented")
def test_inference_spans_off_leaves_the_instrumentations_spans(spans: InMemorySpanExporter) -> None:
    # With inference_spans=False only the instrumentation's span for the cascade run is a chat span,
    # and it holds one rung call's tokens, not the request's: keep inference spans on beside it.
    message = build(inference_spans=False).invoke("q")
    assert message.usage_metadata is not None
    assert llm_tokens(spans) == 1 < message.usage_metadata["input_tokens"]
    names = sorted(s.name for s in spans.get_finished_spans())
    assert names == [
        "cascade.rung 0 cheap",
        "cascade.rung 1 strong",
        "chat cascade[cheap>strong]",
        "invoke_workflow geo",
    ]
