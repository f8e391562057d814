"""``CascadeLLM``: a LlamaIndex ``FunctionCallingLLM`` that is a ladder of LLMs."""

from __future__ import annotations

import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.prompts import BasePromptTemplate
from llama_index.llms.cascade_router import records
from llama_index.llms.cascade_router._backend import LlamaIndexBackend, Parser, identity, to_core_messages
from opentelemetry import context as otel_context
from pydantic import BaseModel, PrivateAttr, ValidationInfo, field_validator, model_validator

from cascade_router.attempts import Result
from cascade_router.backend import Backend
from cascade_router.config import LadderConfig, Rung, as_rungs, check_ladder, load_config
from cascade_router.engine import Call, Engine, Finished, LiveChunk, LiveText, StreamEvent, WholeAnswer
from cascade_router.errors import ConfigError
from cascade_router.ladder import ROUTE_KWARGS, Binding, Ladder, LadderModel, build_ladder
from cascade_router.model_io import Request
from cascade_router.model_spec import build_error, model_spec
from cascade_router.openai_format import asking_logprobs

Model = TypeVar("Model", bound=BaseModel)

_PROVIDER_CLASSES = {
    "openai": ("llama_index.llms.openai", "OpenAI", "llama-index-llms-openai"),
    "anthropic": ("llama_index.llms.anthropic", "Anthropic", "llama-index-llms-anthropic"),
    "mistralai": ("llama_index.llms.mistralai", "MistralAI", "llama-index-llms-mistralai"),
    "groq": ("llama_index.llms.groq", "Groq", "llama-index-llms-groq"),
    "ollama": ("llama_index.llms.ollama", "Ollama", "llama-index-llms-ollama"),
}


def resolve_llm(value: Any, field: str) -> LLM:
    """A LlamaIndex LLM from an object or a ``provider:model`` string."""
    if isinstance(value, LLM):
        return value
    if isinstance(value, str):
        provider, sep, model = value.partition(":")
        if not sep or provider not in _PROVIDER_CLASSES:
            known = sorted(_PROVIDER_CLASSES)
            raise ConfigError(
                field, f"cannot resolve {value!r}: use provider:model with a provider of {known}"
            )
        module, cls, package = _PROVIDER_CLASSES[provider]
        try:
            import importlib

            llm_cls = getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            raise ConfigError(field, f"cannot resolve {value!r}: pip install {package}") from exc
        try:
            return llm_cls(model=model)  # type: ignore[no-any-return]
        except Exception as exc:
            raise ConfigError(field, f"cannot resolve {value!r}: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, Mapping):
        return _llm_from_mapping(value, field)
    raise ConfigError(
        field,
        f"expected a LlamaIndex LLM, a 'provider:model' string or a mapping {{provider, model, ...}}, "
        f"got {type(value).__name__}",
    )


def _llm_from_mapping(value: Mapping[str, Any], field: str) -> LLM:
    """The provider's LlamaIndex class with the other keys as its parameters. The format is the
    one every entry point reads: ``base_url`` is LlamaIndex's ``api_base``, and an ``openai``
    model on a ``base_url`` (a self-hosted server) is an ``OpenAILike`` chat model, since
    ``OpenAI`` refuses model names it does not know."""
    spec = model_spec(value, field)
    options = dict(spec.options)
    if "base_url" in options:
        options["api_base"] = options.pop("base_url")
    target = _PROVIDER_CLASSES.get(spec.provider)
    if spec.provider == "openai" and "api_base" in options:
        target = ("llama_index.llms.openai_like", "OpenAILike", "llama-index-llms-openai-like")
        options.setdefault("is_chat_model", True)
    if target is None:
        raise ConfigError(field, f"unknown provider {spec.provider!r}; known: {sorted(_PROVIDER_CLASSES)}")
    module, cls, package = target
    try:
        import importlib

        llm_cls = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ConfigError(field, f"cannot build {spec.provider}:{spec.model}: pip install {package}") from exc
    try:
        return llm_cls(model=spec.model, **options)  # type: ignore[no-any-return]
    except Exception as exc:
        raise build_error(field, spec, exc) from exc


LLAMA_INDEX_BINDING: Binding[LLM] = Binding(
    resolve=resolve_llm,
    identity=identity,
    fallback_name=lambda llm, index: type(llm).__name__,
    asking_logprobs=asking_logprobs,
)
"""Rungs and judges as LlamaIndex LLMs: objects or ``provider:model`` strings."""


class _WithoutOwnLLMEvents(CallbackManager):
    """The cascade's legacy callback manager: the same handlers, minus the cascade's own LLM
    events.

    Each rung is an LLM that reports its own LLM event, with its own tokens; a handler that sums
    LLM events (``TokenCountingHandler``, budgets) would count every answer twice, and file the
    cheap rung's tokens under the strong one, if the cascade reported one too. LLM events are
    leaves, so nothing nests under the one left out. The request's total stays on the answer:
    ``additional_kwargs["cascade"]["usage"]``. Instrumentation (OpenInference, the dispatcher's
    spans and events) is unaffected.
    """

    def __init__(self, base: CallbackManager) -> None:
        # Not CallbackManager.__init__: it would add the global handler a second time. The handler
        # list is shared, so handlers added to the original later are called too.
        self.handlers = base.handlers
        self._trace_map = defaultdict(list)

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str | None = None,
        parent_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        if event_type == CBEventType.LLM:
            return event_id or str(uuid.uuid4())
        return super().on_event_start(event_type, payload, event_id, parent_id, **kwargs)

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        if event_type != CBEventType.LLM:
            super().on_event_end(event_type, payload, event_id, **kwargs)


class CascadeLLM(FunctionCallingLLM, LadderModel):
    """An LLM that tries the cheapest rung first and escalates while confidence is low.

    Rungs are given as to ``CascadeChatModel``: dicts or ``Rung``s whose ``model`` is any
    LlamaIndex LLM or a ``provider:model`` string. ``ChatResponse.additional_kwargs["cascade"]``
    says who answered and why; ``ChatResponse.raw`` is the answering rung's raw response.
    """

    rungs: list[Rung]
    """The ladder, cheapest first."""
    name: str = "cascade"
    """Name of the cascade in traces and logs."""

    _ladder: Ladder[LLM] = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cascade_name" in data:
            warnings.warn(
                "CascadeLLM(cascade_name=...) is now name=..., as on every other entry point",
                DeprecationWarning,
                stacklevel=4,
            )
            data = {k: v for k, v in data.items() if k != "cascade_name"} | {"name": data["cascade_name"]}
        return data

    @field_validator("rungs", mode="before")
    @classmethod
    def _parse_rungs(cls, value: Any, info: ValidationInfo) -> list[Rung]:
        rungs = as_rungs(value)
        check_ladder(rungs, accept_last=info.data.get("accept_last", True))
        return [
            r.model_copy(update={"model": resolve_llm(r.model, f"rungs[{i}].model")})
            for i, r in enumerate(rungs)
        ]

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        if not isinstance(self.callback_manager, _WithoutOwnLLMEvents):
            self.callback_manager = _WithoutOwnLLMEvents(self.callback_manager)
        self._ladder = build_ladder(self.rungs, LLAMA_INDEX_BINDING, name=self.name, **self.ladder_settings())

    def record_feedback(
        self, request_id: str, score: float | bool, *, comment: str | None = None, rung: int | None = None
    ) -> None:
        """Attach a quality label in [0, 1] (or a thumbs up / down) to a logged request."""
        self._ladder.record_feedback(request_id, score, comment=comment, rung=rung)

    @classmethod
    def from_config(cls, source: Any, **overrides: Any) -> CascadeLLM:
        """The same YAML / TOML / dict configuration as ``CascadeChatModel.from_config``."""
        config = source if isinstance(source, LadderConfig) else load_config(source)
        return cls(**{**config.adapter_fields(), **overrides})

    @classmethod
    def class_name(cls) -> str:
        return "CascadeLLM"

    @property
    def engine(self) -> Engine:
        return self._ladder.engine

    @property
    def _engine(self) -> Engine:
        return self._ladder.engine

    @property
    def _llms(self) -> list[LLM]:
        return self._ladder.models

    @property
    def metadata(self) -> LLMMetadata:
        """What every rung can do: the smallest context window and output, function calling only
        if every rung calls functions."""
        metas = [llm.metadata for llm in self._llms]
        return LLMMetadata(
            context_window=min(m.context_window for m in metas),
            num_output=min(m.num_output for m in metas),
            is_chat_model=True,
            is_function_calling_model=all(
                isinstance(llm, FunctionCallingLLM) and m.is_function_calling_model
                for llm, m in zip(self._llms, metas, strict=True)
            ),
            model_name=self._ladder.label,
        )

    # -- building a call -----------------------------------------------------------------------

    def _call(
        self,
        messages: Sequence[ChatMessage],
        kwargs: dict[str, Any],
        parser: Parser | None = None,
        *,
        per_rung: Callable[[LLM, str | None, str | None, dict[str, Any]], LlamaIndexBackend] | None = None,
        structured: bool = False,
    ) -> Call:
        kwargs = dict(kwargs)
        # This request's overrides (chat(..., start_at="strong", thresholds={"cheap": 0.9})).
        route = {k: kwargs.pop(k) for k in ROUTE_KWARGS if k in kwargs}
        overrides = self._ladder.overrides(
            kwargs.pop("start_at", None), kwargs.pop("thresholds", None), **route
        )
        tools = kwargs.pop("tools", None) or ()
        tool_kwargs: dict[str, Any] = {
            k: kwargs.pop(k) for k in ("allow_parallel_tool_calls", "tool_required") if k in kwargs
        }
        backends = [
            per_rung(llm, p, m, kwargs)
            if per_rung is not None
            else LlamaIndexBackend(
                llm, provider=p, model=m, kwargs=kwargs, tools=tools, tool_kwargs=tool_kwargs, parser=parser
            )
            for llm, (p, m) in zip(self._ladder.models, self._ladder.identities, strict=True)
        ]

        def resolve(model: Any, rung: int) -> Backend:
            llm, provider, name = self._ladder.judge(model, rung)
            return LlamaIndexBackend(llm, provider=provider, model=name)

        tool_names = frozenset(t.metadata.get_name() for t in tools) if tools else None
        request = Request(
            list(messages), to_messages=to_core_messages, tool_names=tool_names, structured=structured
        )
        # LlamaIndex ends its span of a streaming call when the generator is returned, before it
        # runs: trace under the context of the call, not of whoever consumes the stream.
        return Call(request, backends, resolve, otel_context.get_current(), overrides=overrides)

    def _response(self, result: Result, structured: bool = False) -> ChatResponse:
        raw: ChatResponse = result.output.raw
        message = raw.message
        if self.annotate and not structured:
            note = f"\n\n— answered by {result.answered_by.model}"
            message = message.model_copy(update={"content": (message.content or "") + note})
        return ChatResponse(
            message=message,
            raw=raw.raw,
            logprobs=raw.logprobs,
            additional_kwargs={**raw.additional_kwargs, "cascade": _noted(result)},
        )

    # -- chat and complete ---------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._response(self._engine.run(self._call(messages, kwargs)))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._response(await self._engine.arun(self._call(messages, kwargs)))

    def _event(self, event: StreamEvent, so_far: str) -> ChatResponse | None:
        # Messages are the rungs' own (with their tool calls and extra fields), so that what
        # reads the last streamed response, an agent say, sees everything the rung returned.
        if isinstance(event, LiveChunk):
            native: ChatResponse = event.native
            delta = native.delta or ""
            message = native.message.model_copy(update={"content": so_far + delta})
            return ChatResponse(message=message, delta=delta, raw=native.raw, logprobs=native.logprobs)
        if isinstance(event, LiveText):  # the start of a continuation after a broken stream
            return ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=so_far + event.text), delta=event.text
            )
        if isinstance(event, WholeAnswer):
            raw: ChatResponse = event.output.raw
            text = event.output.text
            message = raw.message.model_copy(update={"content": so_far + text})
            return ChatResponse(message=message, delta=text, raw=raw.raw, logprobs=raw.logprobs)
        if isinstance(event, Finished):
            final = self._response(event.result)
            note = (final.message.content or "")[len(event.result.output.text) :] if self.annotate else ""
            return ChatResponse(
                message=final.message.model_copy(update={"content": so_far + note}),
                delta=note,
                raw=final.raw,
                logprobs=final.logprobs,
                additional_kwargs=final.additional_kwargs,
            )
        return None

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call = self._call(messages, kwargs)

        def gen() -> ChatResponseGen:
            so_far = ""
            for event in self._engine.stream(call):
                response = self._event(event, so_far)
                if response is not None:
                    so_far = response.message.content or ""
                    yield response

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        call = self._call(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            so_far = ""
            async for event in self._engine.astream(call):
                response = self._event(event, so_far)
                if response is not None:
                    so_far = response.message.content or ""
                    yield response

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)

    # -- tools ---------------------------------------------------------------------------------

    def _prepare_chat_with_tools(  # noqa: PLR0917 - LlamaIndex's signature
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        # Each rung prepares the tools its own way (its chat_with_tools); the cascade only
        # carries them to the rungs.
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                user_msg
                if isinstance(user_msg, ChatMessage)
                else ChatMessage(role=MessageRole.USER, content=user_msg)
            )
        return {
            "messages": messages,
            "tools": list(tools),
            "allow_parallel_tool_calls": allow_parallel_tool_calls,
            "tool_required": tool_required,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The answering rung reads its own tool-call format."""
        cascade = response.additional_kwargs.get("cascade")
        rung = cascade["answered_by"]["rung"] if cascade else 0
        llm = self._llms[rung]
        if not isinstance(llm, FunctionCallingLLM):
            if error_on_no_tool_call:
                raise ValueError(f"rung {rung} ({type(llm).__name__}) does not call tools")
            return []
        return llm.get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )

    # -- structured output ---------------------------------------------------------------------

    def _structured_call(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        prompt_args: dict[str, Any],
        llm_kwargs: dict[str, Any] | None,
    ) -> Call:
        """Each rung answers as LlamaIndex's own ``structured_predict`` would make it: a
        function-calling model through a forced tool call, any other through a text program
        (the schema's format instructions in the prompt, JSON parsed from the answer)."""
        from llama_index.core.output_parsers import PydanticOutputParser
        from llama_index.core.program.function_program import get_function_tool

        tool = get_function_tool(output_cls)
        text_parser = PydanticOutputParser(output_cls)
        messages = prompt.format_messages(llm=self, **prompt_args)

        def from_tool_call(llm: LLM, response: ChatResponse) -> Model:
            assert isinstance(llm, FunctionCallingLLM)
            calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
            if not calls:
                raise ValueError("the answer holds no tool call with the structured output")
            return output_cls.model_validate(calls[0].tool_kwargs)

        def from_text(llm: LLM, response: ChatResponse) -> Model:
            parsed = text_parser.parse(response.message.content or "")
            return output_cls.model_validate(parsed)

        def per_rung(
            llm: LLM, provider: str | None, name: str | None, kwargs: dict[str, Any]
        ) -> LlamaIndexBackend:
            # kwargs: the call's, without the cascade's own overrides (``_call`` took them out)
            if isinstance(llm, FunctionCallingLLM) and llm.metadata.is_function_calling_model:
                return LlamaIndexBackend(
                    llm,
                    provider=provider,
                    model=name,
                    kwargs=kwargs,
                    tools=[tool],
                    tool_kwargs={"tool_required": True},
                    parser=from_tool_call,
                )
            return LlamaIndexBackend(
                llm,
                provider=provider,
                model=name,
                kwargs=kwargs,
                parser=from_text,
                instructions=text_parser.format,
            )

        return self._call(messages, dict(llm_kwargs or {}), per_rung=per_rung, structured=True)

    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """Structured output validated on every rung: a rung whose arguments do not validate
        against ``output_cls`` is invalid and the ladder escalates."""
        result = self._engine.run(self._structured_call(output_cls, prompt, prompt_args, llm_kwargs))
        _noted(result)
        parsed: Model = result.output.extra["parsed"]
        return parsed

    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        result = await self._engine.arun(self._structured_call(output_cls, prompt, prompt_args, llm_kwargs))
        _noted(result)
        parsed: Model = result.output.extra["parsed"]
        return parsed


def _noted(result: Result) -> dict[str, Any]:
    """The answer's cascade record, also handed to the ``cascade_records()`` blocks around it."""
    record = _cascade_metadata(result)
    records.note(record)
    return record


def _cascade_metadata(result: Result) -> dict[str, Any]:
    """``additional_kwargs["cascade"]``: the result, and the request's total tokens (every
    attempt and judge call), which no callback event carries."""
    usage = result.usage
    return {
        **result.to_dict(),
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
    }
