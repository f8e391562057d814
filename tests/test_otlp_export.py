"""A real OTLP export: spans leave through configure_tracing's exporter and arrive, as protobuf,
at a receiver started inside the test (HTTP and gRPC)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from cascade_router.observability.otel import configure_tracing
from cascade_router.observability.telemetry import Telemetry
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel, LogprobScorer
from langchain_cascade_router.testing import ScriptedChatModel
from tests.otlp_receiver import Received
from tests.otlp_receiver import http_receiver as start_http_receiver


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Received]]:
    with start_http_receiver() as receiver:
        yield receiver


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.requests.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", received
    server.stop(grace=None)


def traced_request(provider: Any) -> str:
    llm = CascadeChatModel(
        name="otlp-test",
        rungs=[
            {
                "model": ScriptedChatModel(
                    model_name="cheap", provider="openai", replies=[Reply("no", confidence=0.2)]
                ),
                "scorer": LogprobScorer(),
                "threshold": 0.8,
            },
            {"model": ScriptedChatModel(model_name="strong", provider="anthropic", replies=["yes"])},
        ],
    )
    llm.engine.telemetry = Telemetry("otlp-test", ["cheap", "strong"], tracer_provider=provider)
    message = llm.invoke("q")
    provider.force_flush()
    provider.shutdown()
    return str(message.response_metadata["cascade"]["request_id"])


def check(received: Received, request_id: str) -> None:
    spans = received.spans()
    assert set(spans) == {
        "invoke_workflow otlp-test",
        "cascade.rung 0 cheap",
        "chat cheap",
        "cascade.rung 1 strong",
        "chat strong",
    }
    workflow = spans["invoke_workflow otlp-test"]
    assert workflow["cascade.answered_by.model"] == "strong"
    assert workflow["cascade.request_id"] == request_id
    assert workflow["cascade.ladder"] == ["cheap", "strong"]
    assert spans["cascade.rung 0 cheap"]["cascade.decision"] == "escalate"
    assert spans["chat strong"]["gen_ai.provider.name"] == "anthropic"
    assert received.service_names() == {"cascade-test"}


def test_otlp_http_explicit_endpoint(http_receiver: tuple[str, Received]) -> None:
    base, received = http_receiver
    provider = configure_tracing(
        "cascade-test", protocol="http/protobuf", endpoint=f"{base}/v1/traces", set_global=False
    )
    check(received, traced_request(provider))
    assert received.paths == ["/v1/traces"]


def test_otlp_http_from_standard_env_vars(
    http_receiver: tuple[str, Received], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, received = http_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=demo")
    provider = configure_tracing("cascade-test", set_global=False)
    check(received, traced_request(provider))
    assert received.paths == ["/v1/traces"]


def test_otlp_grpc(grpc_receiver: tuple[str, Received]) -> None:
    endpoint, received = grpc_receiver
    provider = configure_tracing("cascade-test", protocol="grpc", endpoint=endpoint, set_global=False)
    check(received, traced_request(provider))


def test_unknown_protocol_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        configure_tracing(set_global=False)
