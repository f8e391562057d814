"""The one seam between the engine and a model: ``Backend``.

An adapter (LangChain, LlamaIndex, the openai SDK, a replay of recorded answers) implements it
for one model, bound to one request's call options and callbacks. The engine never sees
anything framework-specific beyond the opaque ``native`` / ``raw`` objects it passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
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
    """One model, ready to be called for the current request."""

    @property
    def provider(self) -> str | None:
        """Provider id for pricing and telemetry (``openai``, ``anthropic``), None if unknown."""
        ...

    @property
    def model(self) -> str | None:
        """The requested model name."""
        ...

    def invoke(self, request: Request) -> ModelOutput: ...

    async def ainvoke(self, request: Request) -> ModelOutput: ...

    def stream(self, request: Request) -> StreamCall: ...

    def astream(self, request: Request) -> AsyncStreamCall: ...
