"""What every native backend shares: the model's identity, a key kept secret, and SDK clients
made on first use and closed in matched pairs (``close`` / ``aclose``)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from pydantic import SecretStr

from cascade_router.backend import BackendBase
from cascade_router.chat_body import json_problem
from cascade_router.model_io import ModelOutput, Request, ToolCall, Usage
from cascade_router.observability.redaction import register_secret, register_url_secrets, safe_url
from cascade_router.openai_format import parse_logprobs


def tool_calls_of(
    raw: list[tuple[str | None, str | None, str]],
) -> tuple[tuple[ToolCall, ...], tuple[str, ...]]:
    """``(id, name, arguments)`` as well-formed calls and descriptions of the malformed ones."""
    calls: list[ToolCall] = []
    invalid: list[str] = []
    for call_id, name, arguments in raw:
        if not name:
            invalid.append(f"a tool call without a name (arguments {arguments[:80]!r})")
            continue
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            invalid.append(f"{name}: arguments are not JSON ({exc.msg})")
            continue
        if isinstance(args, dict):
            calls.append(ToolCall(name, args, call_id))
        else:
            invalid.append(f"{name}: arguments are not a JSON object")
    return tuple(calls), tuple(invalid)


class SDKStream:
    """A streaming call on a provider SDK. Subclasses open the SDK's event stream and read each
    event into the fields below; iteration yields the text deltas, ``output()`` the whole answer."""

    def __init__(self, backend: Any, request: Request) -> None:
        self.backend = backend
        self.request = request
        self.text: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.logprob_items: list[Any] = []
        """The provider's per-token logprob items, for APIs that stream them."""
        self.calls: dict[int, list[Any]] = {}
        """Streamed tool calls by index: ``[id, name, arguments so far]`` (they arrive in pieces)."""

    def add_call_piece(
        self, index: int, call_id: str | None, name: str | None, arguments: str | None
    ) -> None:
        call = self.calls.setdefault(index, [None, None, ""])
        call[0] = call[0] or call_id
        call[1] = call[1] or name  # some servers repeat the name in every piece: keep the first
        call[2] += arguments or ""

    def open(self) -> Iterable[Any]:
        raise NotImplementedError

    async def aopen(self) -> Any:
        """The SDK's async stream (an async iterable of events)."""
        raise NotImplementedError

    def take(self, event: Any) -> str | None:
        """Read one event; return its text delta, if any."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        events = self.open()
        try:
            for event in events:
                delta = self.take(event)
                if delta:
                    self.text.append(delta)
                    yield delta
        finally:
            # Closing the iteration early (an abandoned answer) closes the HTTP response too,
            # so that the provider stops generating what nobody reads.
            close = getattr(events, "close", None)
            if callable(close):
                close()

    async def __aiter__(self) -> AsyncIterator[str]:
        events = await self.aopen()
        try:
            async for event in events:
                delta = self.take(event)
                if delta:
                    self.text.append(delta)
                    yield delta
        finally:
            close = getattr(events, "close", None)
            if callable(close):
                closing = close()
                if hasattr(closing, "__await__"):
                    await closing

    def output(self) -> ModelOutput:
        calls, invalid = tool_calls_of(
            [(c[0], c[1], c[2]) for c in (self.calls[i] for i in sorted(self.calls))]
        )
        # Logprobs only where the API streams them (OpenAI-compatible servers asked for them);
        # without them a logprob scorer reports the signal missing.
        usage = Usage(self.input_tokens, self.output_tokens or 0) if self.input_tokens is not None else None
        return ModelOutput(
            text="".join(self.text),
            usage=usage,
            model=self.model,
            finish_reason=self.finish_reason,
            response_id=self.response_id,
            logprobs=parse_logprobs(list(self.logprob_items)) if self.logprob_items else None,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            parse_error=json_problem(self.request, "".join(self.text), bool(calls or invalid)),
        )

    def partial(self) -> ModelOutput:
        """The answer so far (for early-abort scoring while it is generated)."""
        return self.output()


class SDKBackend(BackendBase):
    """Base of the native backends. Subclasses set ``key_env`` and build their SDK's clients in
    ``make_client(asynchronous, **options)``."""

    key_env = ""
    """The environment variable the key is read from when none is given."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | SecretStr | None,
        base_url: str | None,
        timeout: float | None,
        max_retries: int,
        client: Any,
        async_client: Any,
    ) -> None:
        self._model = model
        # A SecretStr: the key appears in no repr, span, log or error; registered, so that a
        # provider echoing it back in an error message is redacted too, whatever its shape.
        self._key = (
            api_key
            if isinstance(api_key, SecretStr)
            else SecretStr(api_key or os.environ.get(self.key_env, ""))
        )
        register_secret(self._key.get_secret_value())
        if base_url:
            register_url_secrets(base_url)
        self._base_url = base_url
        self._timeout = timeout
        self._max_retries = max_retries
        self._client = client
        self._async_client = async_client

    @property
    def model(self) -> str:
        return self._model

    @property
    def endpoint(self) -> str | None:
        """The base URL (credentials stripped), which identifies the rung's circuit breaker."""
        return safe_url(self._base_url) if self._base_url else None

    def __repr__(self) -> str:
        url = f", base_url={safe_url(self._base_url)!r}" if self._base_url else ""
        return f"{type(self).__name__}({self._model!r}{url})"

    def make_client(self, asynchronous: bool, **options: Any) -> Any:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        return {
            "api_key": self._key.get_secret_value() or "missing",
            "base_url": self._base_url,
            "timeout": self._timeout,
            "max_retries": self._max_retries,
        }

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.make_client(False, **self._options())
        return self._client

    @property
    def async_client(self) -> Any:
        if self._async_client is None:
            self._async_client = self.make_client(True, **self._options())
        return self._async_client

    def close(self) -> None:
        """Close the sync client's connections (the clients are made on first use)."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the async client's connections; call it before the event loop ends."""
        if self._async_client is not None:
            await self._async_client.close()
