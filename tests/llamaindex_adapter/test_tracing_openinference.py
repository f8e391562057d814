"""Beside OpenInference's LlamaIndex instrumentation, which turns the LlamaIndex dispatcher's
spans into OpenTelemetry spans: the cascade's spans nest under the dispatcher's span of the call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.cascade_router.testing import ScriptedLLM
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

from cascade_router import LogprobScorer
from cascade_router.testing import Reply
from tests.conftest import PROVIDER


@pytest.fixture
def instrumented() -> Iterator[None]:
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=PROVIDER)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def build(**kw: Any) -> CascadeLLM:
    return CascadeLLM(
        name="geo",
        rungs=[
            {
                "model": ScriptedLLM(model_name="cheap", replies=[Reply("no", confidence=0.2)]),
                "scorer": LogprobScorer(),
                "threshold": 0.8,
            },
            {"model": ScriptedLLM(model_name="strong", replies=["yes"])},
        ],
        **kw,
    )


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("inference_spans", [True, False])
def test_cascade_spans_nest_under_the_dispatcher_span(spans: Any, inference_spans: bool) -> None:
    build(inference_spans=inference_spans).chat([ChatMessage(role=MessageRole.USER, content="q")])
    got = spans.get_finished_spans()
    names = {s.context.span_id: s.name for s in got}
    edges = sorted((s.name, names.get(s.parent.span_id) if s.parent else None) for s in got)
    expected = [
        ("CascadeLLM.chat", None),
        ("invoke_workflow geo", "CascadeLLM.chat"),
        ("cascade.rung 0 cheap", "invoke_workflow geo"),
        ("cascade.rung 1 strong", "invoke_workflow geo"),
        # OpenInference's own span for each rung's call, parented by the dispatcher's tree
        ("ScriptedLLM.chat", "CascadeLLM.chat"),
        ("ScriptedLLM.chat", "CascadeLLM.chat"),
    ]
    if inference_spans:
        expected += [("chat cheap", "cascade.rung 0 cheap"), ("chat strong", "cascade.rung 1 strong")]
    assert edges == sorted(expected)
