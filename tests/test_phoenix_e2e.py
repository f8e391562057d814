"""End to end against a real Arize Phoenix server (offline): the cascade's spans go out over
OTLP/HTTP and are read back through Phoenix's REST API.

Phoenix pins many packages, so it lives in its own virtual environment; point
CASCADE_PHOENIX_BIN at its ``phoenix`` executable (.ci/run installs it in .venv-phoenix).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_router.observability.otel import configure_tracing
from cascade_router.observability.telemetry import Telemetry
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel, LogprobScorer
from langchain_cascade_router.testing import ScriptedChatModel

BIN_ENV = "CASCADE_PHOENIX_BIN"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = os.environ.get(BIN_ENV)
    if not binary:
        if os.environ.get("CI"):
            pytest.fail(f"CI must set {BIN_ENV}: .ci/run installs Phoenix in .venv-phoenix")
        pytest.skip(f"no Phoenix server here: set {BIN_ENV} to a 'phoenix' executable (.ci/run installs one)")
    port, grpc_port = free_port(), free_port()
    workdir = tmp_path_factory.mktemp("phoenix")
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log_path = Path(workdir, "phoenix.log")
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"Phoenix did not start; see {log_path}") from None
                    time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            proc.wait(30)


def test_phoenix_shows_the_cascade_trace(phoenix: str) -> None:
    provider = configure_tracing("cascade-e2e", endpoint=f"{phoenix}/v1/traces", set_global=False)
    llm = CascadeChatModel(
        name="phoenix-e2e",
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
    llm.engine.telemetry = Telemetry("phoenix-e2e", ["cheap", "strong"], tracer_provider=provider)
    message = llm.invoke("q")
    provider.force_flush()
    provider.shutdown()
    trace_id = message.response_metadata["cascade"]["trace_id"]

    deadline = time.monotonic() + 60
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        # configure_tracing's service name is the Phoenix project, not "default"; the project
        # exists once its first spans are in (404 until then)
        try:
            data = get_json(f"{phoenix}/v1/projects/cascade-e2e/spans?limit=100")["data"]
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            data = []
        spans = [s for s in data if s["context"]["trace_id"] == trace_id]
        if len(spans) == 5:
            break
        time.sleep(0.5)
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {
        "invoke_workflow phoenix-e2e",
        "cascade.rung 0 cheap",
        "chat cheap",
        "cascade.rung 1 strong",
        "chat strong",
    }
    workflow = by_name["invoke_workflow phoenix-e2e"]
    assert workflow["parent_id"] is None
    assert workflow["span_kind"] == "CHAIN"  # not UNKNOWN: the workflow span says what it is
    assert workflow["attributes"]["cascade.answered_by.model"] == "strong"
    assert workflow["attributes"]["cascade.answered_by.name"] == "strong"
    # trace lists show who answered, not "--" (no prompt content: capture is off)
    assert workflow["attributes"]["output.value"].startswith("answered by strong (strong), rung 1")
    assert workflow["attributes"]["input.value"] == "1 message (content not recorded)"
    assert workflow["attributes"]["cascade.request_id"] == message.response_metadata["cascade"]["request_id"]
    rung0 = by_name["cascade.rung 0 cheap"]
    assert rung0["parent_id"] == workflow["context"]["span_id"]
    assert rung0["attributes"]["cascade.decision"] == "escalate"
    chat = by_name["chat strong"]
    assert chat["span_kind"] == "LLM"
    assert chat["parent_id"] == by_name["cascade.rung 1 strong"]["context"]["span_id"]
    assert chat["attributes"]["gen_ai.provider.name"] == "anthropic"
