"""OpenTelemetry spans: names, parentage and attributes for every outcome and entry point."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from cascade_router import CascadeExhaustedError, JudgeScorer, LogprobScorer
from cascade_router.engine import Engine
from cascade_router.observability.telemetry import Telemetry
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

CONFIDENT = Reply("Paris", confidence=0.95, usage=(12, 1))
UNSURE = Reply("Lyon, maybe", confidence=0.3, usage=(12, 3))


def ladder(cheap: list[Any], strong: list[Any], **kw: Any) -> CascadeChatModel:
    return CascadeChatModel(
        name="geo",
        rungs=[
            {
                "model": ScriptedChatModel(model_name="cheap-model", provider="openai", replies=cheap),
                "name": "cheap",
                "scorer": LogprobScorer(),
                "threshold": 0.8,
            },
            {
                "model": ScriptedChatModel(model_name="strong-model", provider="anthropic", replies=strong),
                "name": "strong",
            },
        ],
        **kw,
    )


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


def test_accepted_request_tree_and_attributes(spans: InMemorySpanExporter) -> None:
    message = ladder([CONFIDENT], ["S"]).invoke("Capital of France?")
    got = spans.get_finished_spans()
    names = by_name(got)
    assert set(names) == {"invoke_workflow geo", "cascade.rung 0 cheap (cheap-model)", "chat cheap-model"}
    workflow, rung, chat = (
        names["invoke_workflow geo"],
        names["cascade.rung 0 cheap (cheap-model)"],
        names["chat cheap-model"],
    )
    assert parent_of(workflow, got) is None
    assert parent_of(rung, got) is workflow
    assert parent_of(chat, got) is rung
    assert (workflow.kind, rung.kind, chat.kind) == (SpanKind.INTERNAL, SpanKind.INTERNAL, SpanKind.CLIENT)
    w = dict(workflow.attributes or {})
    assert w["gen_ai.operation.name"] == "invoke_workflow"
    assert w["gen_ai.workflow.name"] == "geo"
    assert w["openinference.span.kind"] == "CHAIN"
    assert tuple(w["cascade.ladder"]) == ("cheap", "strong")
    assert w["cascade.attempt_count"] == 1
    assert w["cascade.answered_by.model"] == "cheap-model"
    assert w["cascade.answered_by.provider"] == "openai"
    assert w["cascade.answered_by.rung"] == 0
    assert w["cascade.outcome"] == "accepted"
    assert w["cascade.final_confidence"] == pytest.approx(0.95)
    assert w["cascade.usage.input_tokens"] == 12
    assert w["cascade.request_id"] == message.response_metadata["cascade"]["request_id"]
    assert message.response_metadata["cascade"]["trace_id"] == format(workflow.context.trace_id, "032x")
    assert "gen_ai.usage.input_tokens" not in w  # totals live in cascade.*: backends sum gen_ai.usage
    r = dict(rung.attributes or {})
    assert r["cascade.rung.index"] == 0
    assert r["cascade.confidence"] == pytest.approx(0.95)
    assert r["cascade.confidence.method"] == "logprob"
    assert r["cascade.threshold"] == 0.8
    assert r["cascade.decision"] == "accept"
    event = next(e for e in rung.events if e.name == "gen_ai.evaluation.result")
    assert dict(event.attributes or {}) == {
        "gen_ai.evaluation.name": "logprob",
        "gen_ai.evaluation.score.label": "accept",
        "gen_ai.evaluation.score.value": pytest.approx(0.95),
    }
    c = dict(chat.attributes or {})
    assert c["gen_ai.operation.name"] == "chat"
    assert c["gen_ai.provider.name"] == "openai"
    assert c["gen_ai.request.model"] == "cheap-model"
    assert c["gen_ai.response.model"] == "cheap-model"
    assert c["gen_ai.usage.input_tokens"] == 12
    assert c["gen_ai.usage.output_tokens"] == 1
    assert c["openinference.span.kind"] == "LLM"
    assert tuple(c["gen_ai.response.finish_reasons"]) == ("stop",)
    assert "gen_ai.input.messages" not in c  # no content unless asked for


def test_escalation_and_error_spans(spans: InMemorySpanExporter) -> None:
    ladder([UNSURE], ["S"]).invoke("q")
    names = by_name(spans.get_finished_spans())
    rung0 = dict(names["cascade.rung 0 cheap (cheap-model)"].attributes or {})
    assert rung0["cascade.decision"] == "escalate"
    assert rung0["cascade.decision.reason"] == "score 0.300 < threshold 0.8"
    assert names["invoke_workflow geo"].attributes["cascade.answered_by.rung"] == 1  # type: ignore[index]
    spans.clear()
    ladder([ConnectionError("HTTP 503")], ["S"]).invoke("q")
    names = by_name(spans.get_finished_spans())
    rung0_span, chat0 = names["cascade.rung 0 cheap (cheap-model)"], names["chat cheap-model"]
    assert rung0_span.attributes["cascade.decision"] == "error"  # type: ignore[index]
    assert rung0_span.attributes["error.type"] == "ConnectionError"  # type: ignore[index]
    assert rung0_span.status.status_code == StatusCode.ERROR
    assert chat0.attributes["error.type"] == "ConnectionError"  # type: ignore[index]
    assert names["invoke_workflow geo"].status.status_code != StatusCode.ERROR


def test_exhausted_workflow_span(spans: InMemorySpanExporter) -> None:
    with pytest.raises(CascadeExhaustedError):
        ladder([UNSURE], [RuntimeError("down")]).invoke("q")
    workflow = by_name(spans.get_finished_spans())["invoke_workflow geo"]
    attrs = dict(workflow.attributes or {})
    assert attrs["cascade.outcome"] == "exhausted"
    assert attrs["error.type"] == "CascadeExhaustedError"
    assert attrs["cascade.attempt_count"] == 2
    assert workflow.status.status_code == StatusCode.ERROR


@pytest.mark.parametrize("mode", ["stream", "astream", "ainvoke"])
async def test_streaming_and_async_give_the_same_tree(spans: InMemorySpanExporter, mode: str) -> None:
    llm = ladder([UNSURE], ["Paris is the capital"])
    if mode == "stream":
        list(llm.stream("q"))
    elif mode == "astream":
        [c async for c in llm.astream("q")]
    else:
        await llm.ainvoke("q")
    got = spans.get_finished_spans()
    names = by_name(got)
    assert set(names) == {
        "invoke_workflow geo",
        "cascade.rung 0 cheap (cheap-model)",
        "chat cheap-model",
        "cascade.rung 1 strong (strong-model)",
        "chat strong-model",
    }
    workflow = names["invoke_workflow geo"]
    for rung, chat in (
        ("cascade.rung 0 cheap (cheap-model)", "chat cheap-model"),
        ("cascade.rung 1 strong (strong-model)", "chat strong-model"),
    ):
        assert parent_of(names[rung], got) is workflow
        assert parent_of(names[chat], got) is names[rung]
    strong_chat = dict(names["chat strong-model"].attributes or {})
    if mode == "ainvoke":
        assert "gen_ai.request.stream" not in strong_chat
    else:
        assert strong_chat["gen_ai.request.stream"] is True  # the final rung streamed live
        assert strong_chat["gen_ai.usage.output_tokens"] > 0
    assert workflow.attributes["cascade.answered_by.model"] == "strong-model"  # type: ignore[index]


def test_judge_span_nests_under_its_rung(spans: InMemorySpanExporter) -> None:
    judge = ScriptedChatModel(model_name="judge-model", replies=["Yes"])
    llm = CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(model_name="cheap", replies=["4"]),
                "scorer": JudgeScorer(judge=judge),
                "threshold": 0.5,
            },
            {"model": ScriptedChatModel(model_name="strong", replies=["4"])},
        ]
    )
    llm.invoke("2+2?")
    got = spans.get_finished_spans()
    names = by_name(got)
    judge_span = names["chat judge-model"]
    assert judge_span.attributes["cascade.role"] == "judge"  # type: ignore[index]
    assert parent_of(judge_span, got) is names["cascade.rung 0 cheap"]
    assert names["chat cheap"].attributes["cascade.role"] == "rung"  # type: ignore[index]


def test_nests_under_the_callers_active_span(spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("handle_request") as app_span:
        ladder([CONFIDENT], ["S"]).invoke("q")
    got = spans.get_finished_spans()
    workflow = by_name(got)["invoke_workflow geo"]
    assert workflow.parent is not None
    assert workflow.parent.span_id == app_span.get_span_context().span_id


def test_inference_spans_switch(spans: InMemorySpanExporter) -> None:
    ladder([CONFIDENT], ["S"], inference_spans=False).invoke("q")
    assert {s.name for s in spans.get_finished_spans()} == {
        "invoke_workflow geo",
        "cascade.rung 0 cheap (cheap-model)",
    }


def test_tracing_off(spans: InMemorySpanExporter) -> None:
    message = ladder([CONFIDENT], ["S"], tracing=False).invoke("q")
    assert spans.get_finished_spans() == ()
    assert message.response_metadata["cascade"]["trace_id"] is None


@pytest.mark.parametrize("mode", ["SPAN_ONLY", "SPAN_AND_EVENT"])
def test_content_only_when_asked(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", mode)
    ladder([CONFIDENT], ["S"]).invoke("Capital of France?")
    chat = by_name(spans.get_finished_spans())["chat cheap-model"]
    attrs = dict(chat.attributes or {})
    assert "Capital of France?" in str(attrs["gen_ai.input.messages"])
    assert "Paris" in str(attrs["gen_ai.output.messages"])
    has_event = any(e.name == "gen_ai.client.inference.operation.details" for e in chat.events)
    assert has_event == (mode == "SPAN_AND_EVENT")


@pytest.mark.parametrize("mode", [None, "SPAN_ONLY", "SPAN_AND_EVENT"])
def test_no_secret_in_any_span_in_any_mode(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, mode: str | None
) -> None:
    secret = "sk-live-abcdefghijklmnop0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    if mode is not None:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", mode)
    leaky = ScriptedChatModel(model_name="leaky", replies=[PermissionError(f"invalid api key {secret}")])
    llm = CascadeChatModel(
        rungs=[
            {"model": leaky, "scorer": LogprobScorer(), "threshold": 0.5},
            {"model": ScriptedChatModel(model_name="ok", replies=["fine"])},
        ]
    )
    message = llm.invoke("hello")
    assert secret not in str(message.response_metadata)
    dumped = []
    for span in spans.get_finished_spans():
        dumped.append(str(dict(span.attributes or {})))
        dumped.extend(str(dict(e.attributes or {})) for e in span.events)
        dumped.append(str(span.status.description))
    assert dumped
    assert not [d for d in dumped if secret in d]
    assert any("[REDACTED]" in d for d in dumped) or "[REDACTED]" in str(message.response_metadata)


class RaisingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector down")


class BlockingExporter(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def engine_with(provider: TracerProvider) -> CascadeChatModel:
    llm = ladder([CONFIDENT], ["S"])
    engine: Engine = llm.engine
    engine.telemetry = Telemetry("geo", ["cheap", "strong"], tracer_provider=provider)
    return llm


def test_broken_exporter_never_fails_a_request() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RaisingExporter()))
    llm = engine_with(provider)
    assert [llm.invoke("q").content for _ in range(5)] == ["Paris"] * 5


def test_hung_collector_never_holds_a_request() -> None:
    # The exporter blocks until released; requests must all finish while it is still blocked.
    exporter = BlockingExporter()
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=64, max_export_batch_size=16, schedule_delay_millis=10)
    )
    llm = engine_with(provider)
    answers = [llm.invoke("q").content for _ in range(200)]
    assert answers == ["Paris"] * 200
    assert exporter.exported == 0  # nothing got through the hung exporter, and nobody waited on it
    exporter.release.set()
    provider.shutdown()


class ExplodingTracer:
    def start_span(self, *a: object, **k: object) -> None:
        raise RuntimeError("tracer bug")


def test_telemetry_bug_never_fails_a_request(caplog: pytest.LogCaptureFixture) -> None:
    llm = ladder([CONFIDENT], ["S"])
    llm.engine.telemetry.tracer = ExplodingTracer()  # type: ignore[assignment]
    from cascade_router.observability import telemetry

    telemetry._reported.clear()
    with caplog.at_level(logging.WARNING, logger="cascade_router.telemetry"):
        assert [llm.invoke("q").content for _ in range(3)] == ["Paris"] * 3
    reports = [r for r in caplog.records if "telemetry failed" in r.getMessage()]
    assert len(reports) == 1  # reported once, not once per request


def test_two_rungs_on_one_model_are_told_apart(spans: InMemorySpanExporter) -> None:
    same = "gemma-3-270m"
    llm = CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(model_name=same, replies=[Reply("x", confidence=0.1)]),
                "name": "short",
                "scorer": LogprobScorer(),
                "threshold": 0.5,
            },
            {"model": ScriptedChatModel(model_name=same, replies=["y"]), "name": "long"},
        ],
        name="bot",
    )
    llm.invoke("Capital of France?")
    names = by_name(spans.get_finished_spans())
    assert "cascade.rung 0 short (gemma-3-270m)" in names
    assert "cascade.rung 1 long (gemma-3-270m)" in names
    workflow = dict(names["invoke_workflow bot"].attributes or {})
    assert workflow["cascade.answered_by.name"] == "long"
    # trace lists get a summary, and no prompt or answer while capture is off
    assert workflow["input.value"] == "1 message (content not recorded)"
    assert workflow["output.value"].startswith("answered by long (gemma-3-270m), rung 1, after 2 attempts")
    assert "Capital" not in str(workflow)
    first = dict(names["cascade.rung 0 short (gemma-3-270m)"].attributes or {})
    last = dict(names["cascade.rung 1 long (gemma-3-270m)"].attributes or {})
    assert first["cascade.decision.reason"].startswith("score 0.1")
    assert last["cascade.decision.reason"] == "final rung"  # a decision's reason, not an escalation's


def test_summaries_carry_content_when_capture_is_on(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    ladder([CONFIDENT], ["S"]).invoke("Capital of France?")
    workflow = next(s for s in spans.get_finished_spans() if s.name.startswith("invoke_workflow"))
    attrs = dict(workflow.attributes or {})
    assert attrs["input.value"] == "Capital of France?"
    assert "Paris" in attrs["output.value"]


def test_configure_tracing_names_the_phoenix_project() -> None:
    from cascade_router.observability.otel import configure_tracing

    provider = configure_tracing("support-bot", endpoint="http://127.0.0.1:9/v1/traces", set_global=False)
    try:
        assert provider.resource.attributes["openinference.project.name"] == "support-bot"
        assert provider.resource.attributes["service.name"] == "support-bot"
    finally:
        provider.shutdown()
