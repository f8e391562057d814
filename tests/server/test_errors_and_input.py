"""Bad input and failures, answered in OpenAI's error format with the right status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cascade_router import LogprobScorer
from cascade_router.errors import RungTimeoutError
from cascade_router.testing import Reply, ScriptedBackend
from tests.server.live import InThread, serving

SECRET = "sk-live-0123456789abcdefSECRET"


def ladder(*rungs: ScriptedBackend, **settings: Any) -> dict[str, Any]:
    built = [
        {"name": r.model, "model": r, "scorer": LogprobScorer(), "threshold": 0.5} for r in rungs[:-1]
    ] + [{"name": rungs[-1].model, "model": rungs[-1]}]
    return {"rungs": built, **settings}


@pytest.fixture
def server() -> Iterator[InThread]:
    ok = ScriptedBackend("ok-model", ["fine"])
    failing = ScriptedBackend("cheap", [ConnectionError(f"refused, key={SECRET}")])
    broken = ScriptedBackend("strong", [RungTimeoutError("strong", 1.0)])
    slow = ScriptedBackend("slow", [Reply("late", delay=5.0)])
    config = {
        "max_body_bytes": 2048,
        "request_timeout_s": 0.5,
        "ladders": {"ok": ladder(ok), "failing": ladder(failing, broken), "slow": ladder(slow)},
    }
    with serving(config) as server:
        yield server


def post(server: InThread, body: Any, **kwargs: Any) -> httpx.Response:
    if not isinstance(body, dict):
        return httpx.post(f"{server.url}/v1/chat/completions", content=body, timeout=30, **kwargs)
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30, **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    return error


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        ({"model": "ok", "messages": MESSAGES, "temprature": 0.2}, "temprature", "unknown field"),
        ({"model": "ok", "messages": MESSAGES, "n": 2}, "n", "n must be 1"),
        ({"model": "ok", "messages": MESSAGES, "temperature": "hot"}, "temperature", "number"),
        ({"model": "ok", "messages": MESSAGES, "temperature": 3}, "temperature", "less than or equal to 2"),
        ({"model": "ok", "messages": []}, "messages", "at least 1"),
        ({"model": "ok"}, "messages", "missing"),
        ({"model": "ok", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "'user'"),
        (
            {"model": "ok", "messages": [{"role": "user", "content": "x", "mood": 1}]},
            "messages.0.mood",
            "unknown",
        ),
        ({"model": "ok", "messages": MESSAGES, "functions": [{"name": "f"}]}, "functions", "use 'tools'"),
        (
            {"model": "ok", "messages": MESSAGES, "response_format": {"type": "yaml"}},
            "response_format",
            "type",
        ),
        ({"model": "ok", "messages": MESSAGES, "tools": [{"type": "function"}]}, "tools", "tool 0"),
        (
            {"model": "ok", "messages": MESSAGES, "stream_options": {"include_usage": True}},
            "stream_options",
            "stream",
        ),
        ({"model": "ok", "messages": MESSAGES, "cascade": {"start_at": "nope"}}, "cascade.start_at", "nope"),
        (
            {"model": "ok", "messages": [{"role": "system", "content": "only"}]},
            "messages",
            "no message to answer",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    server: InThread, body: Any, param: str | None, words: str
) -> None:
    response = post(server, body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]
    assert response.headers["x-cascade-request-id"]


def test_oversize_body_is_413_and_unknown_ladder_404(server: InThread) -> None:
    big = {"model": "ok", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = post(server, big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    # a body that says nothing of its size (chunked) is counted as it arrives
    chunked = post(
        server, iter([b'{"model": "ok", "messages": [{"role": "user", "content": "', b"x" * 5000, b'"}]}'])
    )
    assert chunked.status_code == 413

    missing = post(server, {"model": "gpt-5", "messages": MESSAGES})
    assert missing.status_code == 404
    assert error_of(missing) == {
        "message": "The model 'gpt-5' does not exist or you do not have access to it",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_every_rung_failed_is_502_with_each_attempts_class_and_no_secret(server: InThread) -> None:
    response = post(server, {"model": "failing", "messages": MESSAGES})
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "all_rungs_failed"
    assert [(a["rung"], a["error_class"]) for a in error["cascade"]["attempts"]] == [
        ("cheap", "retryable"),
        ("strong", "timeout"),
    ]
    assert "cheap: retryable; strong: timeout" in error["message"]
    assert SECRET not in response.text
    # the openai client raises its own error type for it, with the body
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        c.chat.completions.create(model="failing", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502


class AuthenticationError(Exception):
    status_code = 401


class BadRequestError(Exception):
    status_code = 400


def test_a_rungs_refused_credentials_are_502_and_a_rejected_request_400() -> None:
    config = {
        "ladders": {
            "auth": ladder(ScriptedBackend("m", [AuthenticationError(f"bad key {SECRET}")])),
            "bad": ladder(ScriptedBackend("m", [BadRequestError("tools[0].parameters is not a schema")])),
        }
    }
    with serving(config) as server:
        auth = post(server, {"model": "auth", "messages": MESSAGES})
        assert auth.status_code == 502
        assert error_of(auth)["code"] == "upstream_auth_failed"
        assert SECRET not in auth.text
        bad = post(server, {"model": "bad", "messages": MESSAGES})
        assert bad.status_code == 400
        assert "tools[0].parameters is not a schema" in error_of(bad)["message"]


def test_deadline_is_504_and_the_call_is_cancelled(server: InThread) -> None:
    t0 = time.monotonic()
    response = post(server, {"model": "slow", "messages": MESSAGES})
    assert response.status_code == 504
    assert error_of(response)["code"] == "deadline_exceeded"
    assert time.monotonic() - t0 < 4.0  # the 5 s answer was not waited for
    # the caller may ask for less time than the server's limit, not more
    streamed = post(
        server, {"model": "slow", "messages": MESSAGES, "stream": True, "cascade": {"deadline_s": 0.2}}
    )
    assert streamed.status_code == 504


def test_a_stream_that_fails_midway_ends_with_an_error_event(tmp_path: Path) -> None:
    breaking = ScriptedBackend("breaking", [Reply("one two three four", fail_after_chunks=2)])
    with serving({"ladders": {"b": ladder(breaking)}}) as server:
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk", max_retries=0)
        seen: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in c.chat.completions.create(model="b", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.append(chunk.choices[0].delta.content)
        assert seen == ["one", " two"]
        assert "stream" in str(caught.value).lower() or "failed" in str(caught.value).lower()


def test_an_abandoned_stream_cancels_the_upstream_call_and_is_logged(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    slow = ScriptedBackend("slow-stream", [Reply(" ".join(["word"] * 200), chunk_delay=0.05)])
    with serving({"decision_log": str(db), "ladders": {"s": ladder(slow)}}) as server:
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            json={"model": "s", "messages": MESSAGES, "stream": True},
            timeout=30,
        ) as response:
            request_id = response.headers["x-cascade-request-id"]
            lines = response.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any("word" in line for line in got)
        # the client is gone: the server stops the rung's stream and logs the request
        log = server.state.logs[0]
        deadline = time.monotonic() + 10
        record = None
        while time.monotonic() < deadline and record is None:
            log.flush()
            record = log.get(request_id)
            time.sleep(0.05)
        assert record is not None
        assert record["attempts"][-1]["decision"] == "abandoned"
        assert slow.script.calls == 1
        assert server.state.in_flight == 0


def test_the_server_span_is_the_parent_of_the_cascade_and_honours_traceparent(
    server: InThread, spans: InMemorySpanExporter
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    response = post(
        server, {"model": "ok", "messages": MESSAGES}, headers={"traceparent": f"00-{trace_id}-{parent}-01"}
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        s.name.startswith("POST") for s in spans.get_finished_spans()
    ):
        time.sleep(0.02)
    finished = spans.get_finished_spans()
    server_span = next(s for s in finished if s.name == "POST /v1/chat/completions")
    assert server_span.kind == trace.SpanKind.SERVER
    assert f"{server_span.context.trace_id:032x}" == trace_id
    assert server_span.parent is not None
    assert f"{server_span.parent.span_id:016x}" == parent
    children = [
        s for s in finished if s.parent is not None and s.parent.span_id == server_span.context.span_id
    ]
    assert children, [s.name for s in finished]
    assert all(f"{s.context.trace_id:032x}" == trace_id for s in children)
    assert server_span.attributes is not None
    assert server_span.attributes["http.response.status_code"] == 200
    assert server_span.attributes["gen_ai.response.model"] == "ok-model"


def test_metrics_count_requests_escalations_errors_and_latency(server: InThread) -> None:
    post(server, {"model": "ok", "messages": MESSAGES})
    post(server, {"model": "failing", "messages": MESSAGES})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'cascade_requests_total{ladder="ok",status="200"} 1.0' in text
    assert 'cascade_requests_total{ladder="failing",status="502"} 1.0' in text
    assert 'cascade_errors_total{error_class="retryable",ladder="failing"} 1.0' in text
    assert 'cascade_errors_total{error_class="timeout",ladder="failing"} 1.0' in text
    assert 'cascade_escalations_total{ladder="failing"} 2.0' in text
    assert 'cascade_rung_latency_seconds_count{ladder="ok",rung="ok-model"} 1.0' in text
    assert "cascade_decision_log_lost_total 0.0" in text


def test_health_and_readiness(server: InThread) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["ladders"] == ["failing", "ok", "slow"]


def test_not_ready_when_the_shared_store_is_unreachable() -> None:
    config = {"state": "redis://127.0.0.1:1/0", "ladders": {"ok": ladder(ScriptedBackend("m", ["x"]))}}
    with serving(config) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "state" in ready.json()


def test_a_request_its_cost_limit_leaves_no_rung_for_is_400() -> None:
    priced = {
        "routing": [{"kind": "cost"}],
        "rungs": [
            {
                "model": {"provider": "scripted", "model": "m", "max_tokens": 100},
                "price": {"input_per_mtok": 10.0, "output_per_mtok": 10.0},
            }
        ],
    }
    with serving({"ladders": {"priced": priced}}) as server:
        body = {"model": "priced", "messages": MESSAGES, "cascade": {"max_cost_usd": 1e-9}}
        refused = post(server, body)
        assert refused.status_code == 400
        error = error_of(refused)
        assert error["code"] == "no_rung_for_request"
        assert "max_cost_usd" in error["message"]
        assert post(server, {**body, "cascade": {"max_cost_usd": 1.0}}).status_code == 200
