"""Shared test setup: no real network (loopback only), scripted models everywhere, and every
span the code under test emits captured in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# The global tracer provider can be set once per process: set it before any test runs.
SPANS = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(PROVIDER)


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that needs a key sets a fake one itself; none may reach a real provider.
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans exported during this test."""
    SPANS.clear()
    yield SPANS
    SPANS.clear()


@pytest.fixture(scope="session")
def local_llm() -> Iterator[str]:
    """The base URL of a real OpenAI-compatible server (llama.cpp + Gemma 3 270M) on loopback."""
    import os
    import sys
    from pathlib import Path

    if os.environ.get("CASCADE_LLM_URL"):  # a server already running (while developing)
        yield os.environ["CASCADE_LLM_URL"]
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import local_llm as server_script

    reason = server_script.missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the local LLM server: {reason}")
        pytest.skip(f"no local LLM server here: {reason}")
    server = server_script.start()
    try:
        yield server.url
    finally:
        server_script.stop(server)
