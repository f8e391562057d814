"""The one seam between the engine and a model: ``Backend``.

An adapter (LangChain, LlamaIndex, the openai SDK, a replay of recorded answers) implements it
for one model, bound to one request's call options and callbacks. The engine never sees
anything framework-specific beyond the opaque ``native`` / ``raw`` objects it passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from cascade_router.model_io import ModelOutput, Request


class StreamCall(Protocol):
    """A streaming call in progress: iterate the native chunks, then ask for the whole output."""

    def __iter__(self) -> Iterator[Any]: ...

    def output(self) -> ModelOutput:
        """The aggregated answer; valid once iteration has finished."""
        ...


class AsyncStreamCall(Protocol):
    def __aiter__(self) -> AsyncIterator[Any]: ...

    def output(self) -> ModelOutput: ...


@runtime_checkable
class Backend(Protocol):
    """One model, ready to be called for the current request. ``BackendBase`` gives the optional
    parts (options, logprob support, closing) their defaults."""

    @property
    def provider(self) -> str | None:
        """Provider id for pricing and telemetry (``openai``, ``anthropic``), None if unknown."""
        ...

    @property
    def model(self) -> str | None:
        """The requested model name."""
        ...

    @property
    def request_options(self) -> Mapping[str, Any]:
        """Call options that traces record (``temperature``, ``max_tokens``...)."""
        ...

    @property
    def returns_logprobs(self) -> bool | None:
        """Whether answers carry token logprobs: False refuses a logprob scorer when the ladder
        is built; None when it depends on the model's own settings."""
        ...

    def invoke(self, request: Request) -> ModelOutput: ...

    async def ainvoke(self, request: Request) -> ModelOutput: ...

    def stream(self, request: Request) -> StreamCall: ...

    def astream(self, request: Request) -> AsyncStreamCall: ...

    def close(self) -> None:
        """Release the backend's sync resources (HTTP connections)."""
        ...

    async def aclose(self) -> None:
        """Release the backend's async resources; call it before the event loop ends."""
        ...


class BackendBase:
    """Defaults for the optional parts of the ``Backend`` contract."""

    __slots__ = ()

    @property
    def request_options(self) -> Mapping[str, Any]:
        return {}

    @property
    def returns_logprobs(self) -> bool | None:
        return None

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
