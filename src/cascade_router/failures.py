"""Provider errors by class: what a failed rung call means for the request.

```
ErrorClass
├── retryable        connection reset or refused, a client-side timeout, 408, 409, 429, 5xx
│                    → retried on the same rung (``max_retries``), backoff with jitter, Retry-After
├── timeout          the cascade's own limit on the rung ran out (timeout, first token, stall)
│                    → not retried (the rung's time is spent): the next rung
├── context_length   the prompt does not fit the model's window
│                    → never retried on the same rung: the next rung (with a larger window)
├── policy           the provider refused the content (content filter, safety refusal)
│                    → raised, with the provider's reason (``on_policy_error: escalate`` routes on)
├── auth             401, 403, a missing or invalid key           → raised at once
├── bad_request      400, 404, 413, 422: the request itself is wrong → raised at once
└── other            anything else (a bug in a backend, a parse error) → the next rung, no retry
```

Errors are recognised by what they carry, not by importing the SDKs: an HTTP status
(``status_code`` on the ``openai`` and ``anthropic`` errors and on ``httpx.HTTPStatusError``'s
response), an error code or type in the body, the class names of connection and timeout errors
(``APIConnectionError``, ``httpx.ConnectError``, ``ConnectionResetError``...). A wrapped error
(a framework that re-raises the SDK's error as its own) is classified by the first error in its
``__cause__`` / ``__context__`` chain that says something.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from cascade_router.errors import RungTimeoutError

ErrorClass = Literal["retryable", "timeout", "context_length", "policy", "auth", "bad_request", "other"]

RAISED_AT_ONCE: frozenset[str] = frozenset({"auth", "bad_request"})
"""Classes that end the request with the rung's own error: another rung would fail the same
way (the request is wrong) or hide a configuration mistake behind a later rung's answer."""

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_AUTH_STATUS = frozenset({401, 403})
_CONTEXT = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long"
    r"|exceeds? the (?:model'?s? )?(?:maximum|max)|input is too long|reduce the length",
    re.IGNORECASE,
)
_POLICY = re.compile(
    r"content[_ ]?filter|content management policy|content[_ ]policy|safety (?:system|filter)"
    r"|responsibleaipolicyviolation|flagged as potentially violating|blocked by (?:the )?safety",
    re.IGNORECASE,
)
_CONNECTION_NAMES = frozenset(
    {
        "APIConnectionError",
        "APITimeoutError",
        "ConnectError",
        "ConnectTimeout",
        "ReadError",
        "ReadTimeout",
        "WriteError",
        "WriteTimeout",
        "PoolTimeout",
        "RemoteProtocolError",
        "ServerDisconnectedError",
        "ClientConnectionError",
        "ClientOSError",
        "IncompleteRead",
    }
)


def classify(exc: BaseException) -> ErrorClass:
    """The class of a rung's error (see the tree above)."""
    for err in _chain(exc):
        found = _classify_one(err)
        if found is not None:
            return found
    return "other"


def retry_after(exc: BaseException, *, now: float | None = None) -> float | None:
    """Seconds the provider asked to wait before the next try (``Retry-After`` in seconds or
    as an HTTP date, or ``retry-after-ms``), None when it did not say."""
    for err in _chain(exc):
        headers = _headers(err)
        if headers is None:
            continue
        ms = _header(headers, "retry-after-ms")
        if ms is not None:
            try:
                return max(0.0, float(ms) / 1000)
            except ValueError:
                pass
        value = _header(headers, "retry-after")
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return None


def status_of(exc: BaseException) -> int | None:
    """The HTTP status a provider answered with, anywhere in the error's chain."""
    for err in _chain(exc):
        status = _status(err)
        if status is not None:
            return status
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _classify_one(err: BaseException) -> ErrorClass | None:
    if isinstance(err, RungTimeoutError):
        return "timeout"
    status = _status(err)
    text = _describe(err)
    if _CONTEXT.search(text) and (status is None or status in (400, 413, 422)):
        return "context_length"
    if _POLICY.search(text) and (status is None or 400 <= status < 500):
        return "policy"
    if status is not None:
        if status in _AUTH_STATUS:
            return "auth"
        if status in _RETRYABLE_STATUS or status >= 500:
            return "retryable"
        if 400 <= status < 500:
            return "bad_request"
    name = type(err).__name__
    if name in ("AuthenticationError", "PermissionDeniedError"):
        return "auth"
    if name in _CONNECTION_NAMES or isinstance(err, ConnectionError | TimeoutError):
        return "retryable"
    return None


def _status(err: BaseException) -> int | None:
    status = getattr(err, "status_code", None)
    if not isinstance(status, int):
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status < 600:
        return status
    return None


def _describe(err: BaseException) -> str:
    """The error's message, code and type, where the provider put its reason."""
    parts = [str(err)]
    for attr in ("code", "type"):
        value = getattr(err, attr, None)
        if isinstance(value, str):
            parts.append(value)
    body = getattr(err, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            parts.extend(str(inner.get(k, "")) for k in ("code", "type", "message"))
    return " ".join(parts)[:4000]


def _headers(err: BaseException) -> Any:
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    return headers if headers is not None else getattr(err, "headers", None)


def _header(headers: Any, name: str) -> str | None:
    try:
        value = headers.get(name)
    except Exception:  # a headers object of some other shape: no hint
        return None
    return value if isinstance(value, str) and value.strip() else None
