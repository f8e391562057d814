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


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server on loopback (``redis-server`` from Debian, which ``.ci/run``
    installs), or ``CASCADE_TEST_REDIS_URL``."""
    import os
    import shutil
    import socket
    import subprocess
    import time

    if os.environ.get("CASCADE_TEST_REDIS_URL"):
        yield os.environ["CASCADE_TEST_REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "no redis-server here: apt-get install redis-server (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Redis: {reason}")
        pytest.skip(reason)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
