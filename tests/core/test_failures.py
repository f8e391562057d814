"""Provider errors by class (``cascade_router.failures``) and what the policy does with them."""

from __future__ import annotations

import email.utils
from typing import Any

import anthropic
import httpx
import openai
import pytest

from cascade_router import policy
from cascade_router.errors import RungTimeoutError
from cascade_router.failures import classify, retry_after, status_of
from cascade_router.ladder import RungRuntime

REQUEST = httpx.Request("POST", "https://api.example.com/v1/chat/completions")


def _response(
    status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=body or {}, headers=headers or {}, request=REQUEST)


def _openai(
    status: int, message: str = "boom", code: str | None = None, **headers: str
) -> openai.APIStatusError:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    response = _response(status, body, headers)
    cls = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        404: openai.NotFoundError,
        409: openai.ConflictError,
        422: openai.UnprocessableEntityError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(message, response=response, body=body["error"])


def _anthropic(status: int, message: str) -> anthropic.APIStatusError:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    response = _response(status, body)
    cls = {400: anthropic.BadRequestError, 529: anthropic.InternalServerError}.get(
        status, anthropic.APIStatusError
    )
    return cls(message, response=response, body=body)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_openai(429, "Rate limit reached", "rate_limit_exceeded"), "retryable"),
        (_openai(500), "retryable"),
        (_openai(503), "retryable"),
        (_openai(409), "retryable"),
        (_openai(408), "retryable"),
        (openai.APIConnectionError(request=REQUEST), "retryable"),
        (openai.APITimeoutError(request=REQUEST), "retryable"),
        (httpx.ConnectError("refused"), "retryable"),
        (httpx.ReadTimeout("slow"), "retryable"),
        (httpx.RemoteProtocolError("peer closed connection"), "retryable"),
        (ConnectionResetError(104, "reset"), "retryable"),
        (RungTimeoutError("cheap", 2.0), "timeout"),
        (RungTimeoutError("cheap", 2.0, what="next chunk"), "timeout"),
        (
            _openai(400, "This model's maximum context length is 4096 tokens.", "context_length_exceeded"),
            "context_length",
        ),
        (_anthropic(400, "prompt is too long: 210000 tokens > 200000 maximum"), "context_length"),
        (_openai(400, "The response was filtered", "content_filter"), "policy"),
        (_openai(400, "Invalid prompt: flagged as potentially violating our usage policy"), "policy"),
        (_openai(401, "Incorrect API key provided", "invalid_api_key"), "auth"),
        (_openai(403, "not allowed"), "auth"),
        (_openai(400, "Unrecognized request argument supplied: foo"), "bad_request"),
        (_openai(404, "The model does not exist"), "bad_request"),
        (_openai(422, "unprocessable"), "bad_request"),
        (_anthropic(529, "Overloaded"), "retryable"),
        (ValueError("a bug in a parser"), "other"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v,
)
def test_classify(exc: BaseException, expected: str) -> None:
    assert classify(exc) == expected


def test_a_wrapped_error_is_classified_by_its_cause() -> None:
    try:
        try:
            raise _openai(429, "Rate limit reached")
        except openai.RateLimitError as inner:
            raise RuntimeError("the framework's own error type") from inner
    except RuntimeError as outer:
        assert classify(outer) == "retryable"
        assert status_of(outer) == 429


def test_an_httpx_status_error_is_classified_by_its_response() -> None:
    exc = httpx.HTTPStatusError("bad", request=REQUEST, response=_response(502))
    assert classify(exc) == "retryable"


def test_retry_after_in_seconds_ms_and_http_date() -> None:
    assert retry_after(_openai(429, **{"retry-after": "7"})) == 7.0
    assert retry_after(_openai(429, **{"retry-after-ms": "1500"})) == 1.5
    later = email.utils.format_datetime(email.utils.localtime().replace(microsecond=0), usegmt=False)
    assert retry_after(_openai(429, **{"retry-after": later})) == pytest.approx(0.0, abs=2)
    assert retry_after(_openai(429)) is None
    assert retry_after(_openai(429, **{"retry-after": "soon"})) is None
    assert retry_after(ValueError("no response")) is None


def _rule(max_retries: int = 2, on_policy_error: policy.OnPolicyError = "raise") -> RungRuntime:
    return RungRuntime(
        index=0,
        name="r",
        provider=None,
        model=None,
        scorer=None,
        threshold=None,
        timeout=None,
        price=None,
        on_missing="escalate",
        on_tool_call="accept",
        validate_output=True,
        max_retries=max_retries,
        on_policy_error=on_policy_error,
    )


def test_retry_delay_only_for_retryable_errors_and_bounded() -> None:
    rule = _rule(max_retries=2)
    assert policy.retry_delay(rule, "retryable", tries=1, retry_after=None, max_wait=20) == 0.25
    assert policy.retry_delay(rule, "retryable", tries=2, retry_after=None, max_wait=20) == 0.5
    assert policy.retry_delay(rule, "retryable", tries=3, retry_after=None, max_wait=20) is None
    for cls in ("timeout", "context_length", "policy", "auth", "bad_request", "other"):
        assert policy.retry_delay(rule, cls, tries=1, retry_after=None, max_wait=20) is None  # type: ignore[arg-type]
    # A provider asking for longer than the ladder waits gets the next rung instead.
    assert policy.retry_delay(rule, "retryable", tries=1, retry_after=30, max_wait=20) is None
    assert (
        policy.retry_delay(_rule(max_retries=0), "retryable", tries=1, retry_after=None, max_wait=20) is None
    )
    many = _rule(max_retries=50)
    assert policy.retry_delay(many, "retryable", tries=40, retry_after=None, max_wait=20) == 8.0


def test_halts() -> None:
    assert policy.halts(_rule(), "auth")
    assert policy.halts(_rule(), "bad_request")
    assert policy.halts(_rule(), "policy")
    assert not policy.halts(_rule(on_policy_error="escalate"), "policy")
    for cls in ("retryable", "timeout", "context_length", "other"):
        assert not policy.halts(_rule(), cls)  # type: ignore[arg-type]


def test_next_rung_retries_then_moves_on_and_stops_on_a_halting_error() -> None:
    from cascade_router.attempts import Attempt

    def failed(rung: int, **evidence: Any) -> Attempt:
        return Attempt(
            rung=rung,
            name=f"r{rung}",
            provider=None,
            model=None,
            decision="error",
            reason="",
            threshold=None,
            evidence=policy.Evidence(error=RuntimeError("x"), **evidence),
        )

    assert policy.next_rung([failed(0, retry_in=0.1)], 3) == 0
    assert policy.next_rung([failed(0)], 3) == 1
    assert policy.next_rung([failed(0, halt=True)], 3) is None
    assert policy.conclude([failed(0, halt=True)], "best").outcome == "raised"
