"""``LangChainBackend``: one LangChain chat model as a core ``Backend``, bound to one call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from pydantic import ValidationError

from cascade_router.backend import BackendBase
from cascade_router.ladder import Binding
from cascade_router.model_io import ModelOutput, Request
from cascade_router.openai_format import asking_logprobs
from langchain_cascade_router._convert import chunk_to_message, to_lc_messages, to_output
from langchain_cascade_router._resolve import resolve_chat_model


def _control_flow_errors() -> tuple[type[BaseException], ...]:
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:  # LangGraph is optional for the chat model
        return ()
    return (GraphBubbleUp,)


def model_identity(model: BaseChatModel) -> tuple[str | None, str | None]:
    """(provider, model name) as the model reports them for tracing."""
    try:
        params = model._get_ls_params()
    except Exception:
        return None, None
    return params.get("ls_provider"), params.get("ls_model_name")


def _first_message(result: LLMResult | ChatResult) -> BaseMessage:
    first = result.generations[0]
    generation = first if isinstance(result, ChatResult) else first[0]  # type: ignore[index]
    if not isinstance(generation, ChatGeneration):
        raise TypeError(f"a rung returned {type(generation).__name__}, expected a ChatGeneration")
    return generation.message


class _Stream:
    def __init__(self, backend: LangChainBackend, request: Request) -> None:
        self._backend = backend
        self._messages = backend.messages(request)
        self._chunks: list[AIMessageChunk] = []

    def __iter__(self) -> Iterator[AIMessageChunk]:
        b = self._backend
        for chunk in b.runnable.stream(self._messages, b.config, stop=b.stop, **b.kwargs):
            if not isinstance(chunk, AIMessageChunk):
                raise TypeError(f"a rung streamed {type(chunk).__name__}, expected AIMessageChunk")
            self._chunks.append(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[AIMessageChunk]:
        b = self._backend
        async for chunk in b.runnable.astream(self._messages, b.config, stop=b.stop, **b.kwargs):
            if not isinstance(chunk, AIMessageChunk):
                raise TypeError(f"a rung streamed {type(chunk).__name__}, expected AIMessageChunk")
            self._chunks.append(chunk)
            yield chunk

    def output(self) -> ModelOutput:
        return self._backend.read(chunk_to_message(self._chunks))

    def partial(self) -> ModelOutput:
        """The answer so far (for early-abort scoring while it is generated)."""
        return self.output()


class LangChainBackend(BackendBase):
    """Calls ``runnable`` (a chat model, possibly with tools or a schema bound) with this call's
    callbacks, stop sequences and keyword arguments."""

    __slots__ = (
        "_model",
        "_provider",
        "config",
        "kwargs",
        "parser",
        "runnable",
        "stop",
        "takes_raw",
        "unobserved",
    )

    def __init__(
        self,
        runnable: Runnable[Any, Any],
        *,
        provider: str | None,
        model: str | None,
        config: RunnableConfig | None = None,
        stop: list[str] | None = None,
        kwargs: dict[str, Any] | None = None,
        parser: Runnable[Any, Any] | None = None,
        takes_raw: bool = False,
        unobserved: bool = False,
    ) -> None:
        self.runnable = runnable
        self._provider = provider
        self._model = model
        self.config = config
        self.stop = stop
        self.kwargs = kwargs or {}
        self.parser = parser
        """Structured output: parses the answer; a failure makes the answer invalid."""
        self.takes_raw = takes_raw
        """The runnable returns ``{"raw": AIMessage, ...}`` (``with_structured_output(include_raw=True)``)."""
        self.unobserved = unobserved
        """No callback handler is attached to the call: a rung model with no handlers of its own
        is called through its generation step, without a LangChain run around it."""

    @property
    def provider(self) -> str | None:
        return self._provider

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def request_options(self) -> dict[str, Any]:
        """Call options that traces record (``gen_ai.request.temperature``...)."""
        return self.kwargs

    @staticmethod
    def messages(request: Request) -> Sequence[BaseMessage]:
        if request.native is not None:
            native: Sequence[BaseMessage] = request.native
            return native
        return to_lc_messages(request.messages)

    @staticmethod
    def chunk_text(native: Any) -> str | None:
        """A streamed chunk's text (for continuing a broken stream elsewhere)."""
        return native.text if isinstance(native, AIMessageChunk) else None

    def read(self, result: Any) -> ModelOutput:
        message = result["raw"] if self.takes_raw and isinstance(result, dict) else result
        if self.parser is None:
            return to_output(message)
        try:
            parsed = self.parser.invoke(message)
        except (OutputParserException, ValidationError, ValueError) as exc:
            return to_output(message, parse_error=f"{type(exc).__name__}: {str(exc)[:300]}")
        if parsed is None:
            # A tools parser returns None when the model answered in text instead of calling
            # the schema's tool: that answer has no structured output at all.
            return to_output(message, parse_error="the answer holds no structured output")
        return to_output(message, parsed=parsed)

    def _direct(self) -> tuple[BaseChatModel, dict[str, Any]] | None:
        """The chat model to call through ``generate``, with its bound keyword arguments.

        ``invoke`` on a chat model only merges configs and converts the input before calling
        ``generate``; our input is already a message list and our callbacks already carry the
        cascade run's tags and metadata, so the rung is called one layer down. That is a
        measurable share of the cascade's overhead on fast models. Anything else (a schema
        chain, a binding with its own config) goes through ``invoke``.
        """
        r = self.runnable
        if isinstance(r, BaseChatModel):
            return r, self.kwargs
        if (
            isinstance(r, RunnableBinding)
            and isinstance(r.bound, BaseChatModel)
            and not r.config
            and not r.config_factories
        ):
            return r.bound, {**r.kwargs, **self.kwargs}
        return None

    def _callbacks(self) -> Any:
        return self.config.get("callbacks") if self.config else None

    def _runless(self, model: BaseChatModel) -> bool:
        return self.unobserved and model.callbacks is None and not model.verbose

    def invoke(self, request: Request) -> ModelOutput:
        messages = self.messages(request)
        direct = self._direct()
        if direct is not None:
            model, kwargs = direct
            if self._runless(model):
                result = model._generate_with_cache(
                    list(messages), stop=self.stop, **_generation_kwargs(kwargs)
                )
                return self.read(_first_message(result))
            llm_result = model.generate(
                [list(messages)], stop=self.stop, callbacks=self._callbacks(), **kwargs
            )
            return self.read(_first_message(llm_result))
        return self.read(self.runnable.invoke(messages, self.config, stop=self.stop, **self.kwargs))

    async def ainvoke(self, request: Request) -> ModelOutput:
        messages = self.messages(request)
        direct = self._direct()
        if direct is not None:
            model, kwargs = direct
            if self._runless(model):
                result = await model._agenerate_with_cache(
                    list(messages), stop=self.stop, **_generation_kwargs(kwargs)
                )
                return self.read(_first_message(result))
            llm_result = await model.agenerate(
                [list(messages)], stop=self.stop, callbacks=self._callbacks(), **kwargs
            )
            return self.read(_first_message(llm_result))
        return self.read(await self.runnable.ainvoke(messages, self.config, stop=self.stop, **self.kwargs))

    def stream(self, request: Request) -> _Stream:
        return _Stream(self, request)

    def astream(self, request: Request) -> _Stream:
        return _Stream(self, request)


LANGCHAIN_BINDING: Binding[BaseChatModel] = Binding(
    resolve=resolve_chat_model,
    identity=model_identity,
    fallback_name=lambda model, index: type(model).__name__,
    asking_logprobs=asking_logprobs,
    # LangGraph's interrupts (human-in-the-loop) are control flow: they pass through the ladder.
    propagate=_control_flow_errors(),
)
"""Rungs and judges as LangChain chat models: objects or ``provider:model`` strings."""


def _generation_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``generate()`` passes on to the generation step: it keeps the
    structured-output format for its callbacks, so the provider never sees it."""
    if "ls_structured_output_format" not in kwargs and "structured_output_format" not in kwargs:
        return kwargs
    return {
        k: v
        for k, v in kwargs.items()
        if k not in ("ls_structured_output_format", "structured_output_format")
    }
