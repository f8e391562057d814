"""``CascadeChatModel``: a LangChain chat model that is a ladder of chat models."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any, Literal, overload

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.exceptions import OutputParserException
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation, LLMResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnableMap,
    RunnablePassthrough,
    ensure_config,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from langchain_core.utils.utils import LC_ID_PREFIX
from pydantic import PrivateAttr, ValidationInfo, field_validator

from cascade_router.attempts import Result
from cascade_router.backend import Backend
from cascade_router.config import LadderConfig, Rung, as_rungs, check_ladder, load_config
from cascade_router.engine import Call, Engine, Finished, LiveChunk, LiveText, StreamEvent, WholeAnswer
from cascade_router.ladder import ROUTE_KWARGS, Ladder, LadderModel, build_ladder
from cascade_router.model_io import Request, Usage
from langchain_cascade_router._backend import LANGCHAIN_BINDING, LangChainBackend
from langchain_cascade_router._convert import (
    message_to_chunk,
    strip_chunk,
    to_core_messages,
    tool_names,
    usage_metadata,
)
from langchain_cascade_router._resolve import resolve_chat_model
from langchain_cascade_router._runs import (
    RunParent,
    child_callbacks,
    is_streaming_handler,
    langchain_adds_handlers,
    parent_from_config,
    publish,
    take,
)

StructuredMethod = Literal["function_calling", "json_mode", "json_schema"]


Recipe = tuple[Any, ...]
"""How a derived model was bound (``("tools", tools, kwargs)`` or ``("structured", schema,
method, strict_kwargs)``), so that a copy or an unpickled model binds its own rungs the same way."""


@dataclass(slots=True)
class _Ladder:
    """What a CascadeChatModel derives from its fields, and what bind_tools and
    with_structured_output change in a copy."""

    ladder: Ladder[BaseChatModel]
    runnables: list[Runnable[Any, Any]]
    """What each rung calls: its model, or the model with tools or a schema bound."""
    identity: dict[str, Any]
    tool_names: frozenset[str] | None = None
    parser: Runnable[Any, Any] | None = None
    """Structured output: parses each rung's answer; a failure escalates."""
    takes_raw: bool = False
    keep_unparsed: bool = False
    """``include_raw=True``: a final answer that does not parse is returned, with its error."""
    recipe: Recipe | None = None

    @property
    def models(self) -> list[BaseChatModel]:
        return self.ladder.models

    @property
    def identities(self) -> list[tuple[str | None, str | None]]:
        return self.ladder.identities

    @property
    def engine(self) -> Engine:
        return self.ladder.engine


class _LazyBackends(Sequence[Backend]):
    """The rungs' backends for one call, built when the engine first reaches each rung: most
    requests are answered by the first rung and never need the others'."""

    __slots__ = ("_build", "_built", "_n")

    def __init__(self, n: int, build: Callable[[int], Backend]) -> None:
        self._n = n
        self._build = build
        self._built: dict[int, Backend] = {}

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> Backend: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Backend]: ...
    def __getitem__(self, index: int | slice) -> Backend | Sequence[Backend]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        backend = self._built.get(index)
        if backend is None:
            if not 0 <= index < self._n:
                raise IndexError(index)
            backend = self._built[index] = self._build(index)
        return backend


def _annotate(content: str | list[Any], model: str | None) -> str | list[Any]:
    note = f"\n\n— answered by {model or 'unknown model'}"
    if isinstance(content, str):
        return content + note
    return [*content, {"type": "text", "text": note}]


class CascadeChatModel(BaseChatModel, LadderModel):
    """A chat model that tries the cheapest rung first and escalates while confidence is low.

    ```python
    llm = CascadeChatModel(
        rungs=[
            {
                "model": ChatOpenAI(model="gpt-4.1-nano", logprobs=True),
                "scorer": LogprobScorer(),
                "threshold": 0.8,
                "name": "nano",
            },
            {"model": "anthropic:claude-opus-4-6"},
        ]
    )
    ```

    The returned ``AIMessage`` names the answering model in ``response_metadata["model_name"]``
    and holds every attempt in ``response_metadata["cascade"]``; ``usage_metadata`` sums every
    attempt and judge call.
    """

    rungs: list[Rung]
    """The ladder, cheapest first: ``Rung`` objects or dicts with at least ``model``."""
    temperature: float | None = None
    """Forwarded to every rung call when set."""
    max_tokens: int | None = None
    """Forwarded to every rung call when set."""
    stop: list[str] | None = None
    """Default stop sequences, forwarded to every rung call."""
    streaming: bool = False
    """Make ``invoke`` stream internally (the buffered rungs still answer whole)."""

    # All derived state in one object: pydantic routes every private-attribute read through a
    # slow __getattr__, and the hot path reads this once per call.
    _ladder: _Ladder = PrivateAttr()

    @field_validator("rungs", mode="before")
    @classmethod
    def _parse_rungs(cls, value: Any, info: ValidationInfo) -> list[Rung]:
        rungs = as_rungs(value)
        # accept_last is declared (and so validated) before rungs.
        check_ladder(rungs, accept_last=info.data.get("accept_last", True))
        return [
            r.model_copy(update={"model": resolve_chat_model(r.model, f"rungs[{i}].model")})
            for i, r in enumerate(rungs)
        ]

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        ladder = build_ladder(
            self.rungs, LANGCHAIN_BINDING, name=self.name or "cascade", **self.ladder_settings()
        )
        runtimes = ladder.engine.rungs
        # Computed once: LangChain reads it on every call, and the ladder never changes.
        identity = {
            "ladder": [
                {
                    "name": r.name,
                    "model": r.model,
                    "threshold": r.threshold,
                    "scorer": r.scorer.method if r.scorer else None,
                }
                for r in runtimes
            ],
            "on_exhausted": self.on_exhausted,
            "accept_last": self.accept_last,
        }
        self._ladder = _Ladder(ladder=ladder, runnables=list(ladder.models), identity=identity)

    def record_feedback(
        self, request_id: str, score: float | bool, *, comment: str | None = None, rung: int | None = None
    ) -> None:
        """Attach a quality label in [0, 1] (or a thumbs up / down) to a logged request."""
        self._ladder.ladder.record_feedback(request_id, score, comment=comment, rung=rung)

    @classmethod
    def from_config(cls, source: Any, **overrides: Any) -> CascadeChatModel:
        """Build from a YAML, TOML or JSON file path, a dict, or a ``LadderConfig``."""
        config = source if isinstance(source, LadderConfig) else load_config(source)
        return cls(**{**config.adapter_fields(), **overrides})

    # -- copies: the engine is rebuilt (LadderModel), the rungs bound again as they were -------

    def _copy_extra(self) -> Recipe | None:
        return self._ladder.recipe

    def _restore_extra(self, extra: Recipe) -> None:
        self._ladder = self._bound(extra)

    # -- identity -----------------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "cascade-router"

    @property
    def ladder_label(self) -> str:
        """``cascade[nano>haiku>opus]``: the ladder as one model name, for tracers."""
        return self._ladder.ladder.label

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self._ladder.identity

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # Runs before the call, when the answering rung is not known yet: the ladder is the
        # model. The rungs' own runs (children of this one) carry each real model, and the
        # answer names the one that answered in response_metadata["model_name"].
        params = LangSmithParams(
            ls_provider="cascade_router",
            ls_model_name=kwargs.get("model") or self.ladder_label,
            ls_model_type="chat",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- binding ------------------------------------------------------------------------------

    def _bound(self, recipe: Recipe) -> _Ladder:
        """This model's ladder with every rung bound as ``recipe`` says."""
        models = self._ladder.models
        kind = recipe[0]
        if kind == "tools":
            _, tools, extra = recipe
            runnables: list[Runnable[Any, Any]] = [m.bind_tools(tools, **extra) for m in models]
            return replace(self._ladder, runnables=runnables, tool_names=tool_names(tools), recipe=recipe)
        _, schema, method, strict_kw, *rest = recipe
        keep_unparsed = bool(rest and rest[0])
        pydantic_schema = isinstance(schema, type) and is_basemodel_subclass(schema)
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            fmt = {"kwargs": {"method": method}, "schema": tool}
            runnables = [
                m.bind_tools([schema], tool_choice=name, ls_structured_output_format=fmt, **strict_kw)
                for m in models
            ]
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic_schema
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
            return replace(
                self._ladder,
                runnables=runnables,
                tool_names=frozenset({name}),
                parser=parser,
                keep_unparsed=keep_unparsed,
                recipe=recipe,
            )
        runnables = [
            m.with_structured_output(schema, method=method, include_raw=True, **strict_kw) for m in models
        ]
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic_schema else JsonOutputParser()
        return replace(
            self._ladder,
            runnables=runnables,
            tool_names=None,
            parser=parser,
            takes_raw=True,
            keep_unparsed=keep_unparsed,
            recipe=recipe,
        )

    def _derive(self, recipe: Recipe) -> CascadeChatModel:
        """A copy whose rungs are bound as ``recipe`` says (tools, or a schema)."""
        clone = self.model_copy()
        clone._ladder = self._bound(recipe)
        return clone

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind the tools on every rung, with each rung's own ``bind_tools``.

        A tool call naming a tool that is not bound, or with arguments that are not a JSON
        object, fails the validity check and escalates; a well-formed one is judged by the
        rung's ``on_tool_call`` (``accept`` by default).
        """
        extra = dict(kwargs)
        if tool_choice is not None:
            extra["tool_choice"] = tool_choice
        return self._derive(("tools", list(tools), extra)).bind()

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: StructuredMethod = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Structured output, validated on every rung: a rung whose answer does not parse into
        ``schema`` is invalid and the ladder escalates.

        ``function_calling`` (default) forces a tool call on every rung; ``json_mode`` and
        ``json_schema`` use each rung's own ``with_structured_output`` for that method.
        ``strict`` is passed to each rung when set (not every provider accepts it).
        """
        if kwargs:
            raise ValueError(f"with_structured_output: unsupported arguments {sorted(kwargs)}")
        if method not in ("function_calling", "json_mode", "json_schema"):
            raise ValueError(f"with_structured_output: unknown method {method!r}")
        # Passed on only when given: providers that do not know `strict` reject it.
        strict_kw: dict[str, Any] = {} if strict is None else {"strict": strict}
        derived = self._derive(("structured", schema, method, strict_kw, include_raw))
        parser = derived._ladder.parser
        assert parser is not None
        if not include_raw:
            return derived | parser
        parse_raw = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser | RunnableLambda(_present), parsing_error=lambda _: None
        )
        no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=derived) | parse_raw.with_fallbacks([no_parse], exception_key="parsing_error")

    # -- calling ------------------------------------------------------------------------------

    def _call_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        if self.temperature is not None:
            defaults["temperature"] = self.temperature
        if self.max_tokens is not None:
            defaults["max_tokens"] = self.max_tokens
        return {**defaults, **kwargs} if defaults else kwargs

    def _call(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        asynchronous: bool,
        *,
        unobserved: bool = False,
    ) -> Call:
        stop = stop if stop is not None else self.stop
        # This request's overrides (invoke kwargs, .bind(), or the config's configurable keys)
        # are the cascade's, never passed on to the rungs.
        kwargs = dict(kwargs)
        start_at, thresholds = kwargs.pop("start_at", None), kwargs.pop("thresholds", None)
        route = {k: kwargs.pop(k) for k in ROUTE_KWARGS if k in kwargs}
        overrides = self._ladder.ladder.overrides(start_at, thresholds, **route)
        call_kwargs = self._call_kwargs(kwargs)
        ladder = self._ladder
        # The cascade's run: handed in by generate(), published by stream() / astream() (which
        # LangChain calls _stream without), or none on the fast path.
        parent = RunParent.of(run_manager) if run_manager is not None else take(self)
        runnables, identities, parser, takes_raw = (
            ladder.runnables,
            ladder.identities,
            ladder.parser,
            ladder.takes_raw,
        )

        # One rung backend / judge resolver per way of reporting: to this request's run (a child
        # run of it), or to no handler at all (shadow calls, made after the run ended).
        def rung_backend(i: int, config: RunnableConfig | None, quiet: bool) -> Backend:
            return LangChainBackend(
                runnables[i],
                provider=identities[i][0],
                model=identities[i][1],
                config=config,
                stop=stop,
                kwargs=call_kwargs,
                parser=parser,
                takes_raw=takes_raw,
                unobserved=quiet,
            )

        def judge_backend(model: Any, rung: int, config: RunnableConfig | None) -> Backend:
            if model is None:
                judge, provider, name = ladder.models[rung], *ladder.identities[rung]
            else:
                judge, provider, name = ladder.ladder.judges.get(model)
            return LangChainBackend(judge, provider=provider, model=name, config=config)

        def build(i: int) -> Backend:
            return rung_backend(i, child_callbacks(parent, f"cascade:rung:{i}", asynchronous), unobserved)

        def resolve(model: Any, rung: int) -> Backend:
            return judge_backend(model, rung, child_callbacks(parent, f"cascade:judge:{rung}", asynchronous))

        request = Request(
            messages,
            to_messages=to_core_messages,
            tool_names=ladder.tool_names,
            structured=parser is not None,
            keep_unparsed=ladder.keep_unparsed,
        )
        shadowed = ladder.engine.shadow is not None
        return Call(
            request,
            _LazyBackends(len(runnables), build),
            resolve,
            overrides=overrides,
            shadow_backends=_LazyBackends(len(runnables), lambda i: rung_backend(i, None, True))
            if shadowed
            else None,
            shadow_resolve=(lambda model, rung: judge_backend(model, rung, None)) if shadowed else None,
        )

    # Token usage. The rungs' calls are child runs that report their own usage to callback
    # handlers (LangSmith, get_usage_metadata_callback, OpenTelemetry instrumentations), so the
    # cascade's own run reports none: handlers summing a trace would count every token twice.
    # The caller still gets the request's total on the message: `generate`, `agenerate`,
    # `stream` and `astream` add it after the callbacks have seen the run (`_with_totals`).

    def _message(self, result: Result, usage: Usage, **extra: Any) -> AIMessage:
        """The answering rung's message as the cascade's: its model name, the cascade record and,
        when asked, its annotation; ``extra`` holds further top-level metadata (the fast path's
        ``llm_output``, which ``generate`` would merge in) and fields to set."""
        raw = result.output.raw
        assert isinstance(raw, AIMessage)
        model = result.answered_by.model
        llm_output = extra.pop("llm_output", None) or {}
        update: dict[str, Any] = {
            "response_metadata": {
                **llm_output,
                **raw.response_metadata,
                "model_name": model,
                "cascade": _cascade_metadata(result, usage),
            },
            "usage_metadata": None,
            **extra,
        }
        if self.annotate and self._ladder.parser is None:
            update["content"] = _annotate(raw.content, model)
        return raw.model_copy(update=update)

    def _llm_output(self, result: Result, usage: Usage) -> dict[str, Any]:
        return {
            "model_name": result.answered_by.model,
            # Not "token_usage": handlers read that key as this run's own usage.
            "cascade_token_usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
            },
        }

    def _chat_result(self, result: Result) -> ChatResult:
        usage = result.usage
        return ChatResult(
            generations=[ChatGeneration(message=self._message(result, usage))],
            llm_output=self._llm_output(result, usage),
        )

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        # One output per prompt of a generate() batch; each prompt may be answered by another rung.
        outputs = [o for o in llm_outputs if o]
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for output in outputs:
            for key in usage:
                usage[key] += output["cascade_token_usage"][key]
        names = list(dict.fromkeys(str(o["model_name"]) for o in outputs))
        return {
            "model_name": ",".join(names),
            "model_names": [o["model_name"] for o in outputs],
            "cascade_token_usage": usage,
        }

    # -- the fast path ------------------------------------------------------------------------
    # With no callback handler to report to (no LangSmith, no get_usage_metadata_callback, no
    # tracer handler), no cache and no rate limiter, the cascade's own LangChain run and its
    # rungs' child runs would be bookkeeping nobody reads: invoke runs the engine directly and
    # each rung through its model's own generation step (its cache, rate limiter and output
    # version still apply). The answer is the same message the full path returns.

    def _unobserved(self, config: RunnableConfig | None) -> bool:
        if self.streaming or self.rate_limiter is not None or getattr(self, "output_version", None) == "v1":
            return False
        if self.cache is not False and (self.cache is not None or get_llm_cache() is not None):
            return False
        config = config or {}
        callbacks = config.get("callbacks")
        if self.callbacks or (
            callbacks.handlers if isinstance(callbacks, BaseCallbackManager) else callbacks
        ):
            return False  # handlers given: no need to ask LangChain which it would add
        return not langchain_adds_handlers(self.verbose)

    def _fast_message(self, result: Result) -> AIMessage:
        """What ``generate`` makes of the result (``response_metadata`` merged with the run's
        ``llm_output``, an id, the request's total usage), without a LangChain run, in one copy
        of the rung's message."""
        usage = result.usage
        raw = result.output.raw
        return self._message(
            result,
            usage,
            llm_output=self._llm_output(result, usage),
            id=getattr(raw, "id", None) or f"{LC_ID_PREFIX}-{uuid.uuid4()}-0",
            usage_metadata=usage_metadata(usage),
        )

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        kwargs = _configured(config, kwargs)
        if not self._unobserved(config):
            return super().invoke(input, config, stop=stop, **kwargs)
        messages = self._convert_input(input).to_messages()
        call = self._call(messages, stop, None, kwargs, False, unobserved=True)
        return self._fast_message(self._ladder.engine.run(call))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        kwargs = _configured(config, kwargs)
        if not self._unobserved(config):
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        messages = self._convert_input(input).to_messages()
        call = self._call(messages, stop, None, kwargs, True, unobserved=True)
        return self._fast_message(await self._ladder.engine.arun(call))

    def generate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        return _with_totals(super().generate(messages, stop, callbacks, **kwargs))

    async def agenerate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        return _with_totals(await super().agenerate(messages, stop, callbacks, **kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        # LangChain's stream() opens the cascade's run but calls _stream without its run
        # manager: the run's id is chosen here and what the run passes on is published for
        # _stream, so that the rungs' runs are its children (and unstreamed, see _runs).
        kwargs = _configured(config, kwargs)
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid.uuid4()
        config = {**config, "run_id": run_id}
        parent = parent_from_config(config, run_id, self, asynchronous=False)
        chunks = super().stream(input, config, stop=stop, **kwargs)
        try:
            with publish(self, parent):
                first = next(chunks, None)
            if first is None:
                return
            yield _chunk_with_totals(first)
            for chunk in chunks:
                yield _chunk_with_totals(chunk)
        finally:
            chunks.close()  # type: ignore[attr-defined]  # a generator

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        kwargs = _configured(config, kwargs)
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid.uuid4()
        config = {**config, "run_id": run_id}
        parent = parent_from_config(config, run_id, self, asynchronous=True)
        chunks = super().astream(input, config, stop=stop, **kwargs)
        try:
            with publish(self, parent):
                first = await anext(chunks, None)
            if first is None:
                return
            yield _chunk_with_totals(first)
            async for chunk in chunks:
                yield _chunk_with_totals(chunk)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]  # an async generator

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # With a streaming handler attached (astream_events, LangGraph's "messages" mode),
        # LangChain answers invoke() through _stream, again without the run manager.
        if run_manager is None or not self._should_stream(async_api=False, run_manager=run_manager, **kwargs):
            return super()._generate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)
        with publish(self, RunParent.of(run_manager)):
            return super()._generate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if run_manager is None or not self._should_stream(async_api=True, run_manager=run_manager, **kwargs):
            return await super()._agenerate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)
        with publish(self, RunParent.of(run_manager)):
            return await super()._agenerate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)

    @property
    def engine(self) -> Engine:
        return self._ladder.engine

    def _should_stream(
        self,
        *,
        async_api: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> bool:
        # LangChain's rule has three affirmative triggers; the last (is any handler a streaming
        # handler, as astream_events and LangGraph's "messages" mode attach) is a runtime
        # Protocol isinstance check costing ~12 us per handler per call. Its answer depends
        # only on the handler's class, so it is remembered per class; LangChain's own method
        # still decides whenever a trigger fires (its disabling rules only turn True to False).
        handlers = run_manager.handlers if run_manager is not None else []
        if not kwargs.get("stream") and not self.streaming and not any(map(is_streaming_handler, handlers)):
            return False
        return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._call(messages, stop, run_manager, kwargs, False)
        return self._chat_result(self._ladder.engine.run(call))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await self.engine.arun(self._call(messages, stop, run_manager, kwargs, True))
        return self._chat_result(result)

    def _event_chunk(self, event: StreamEvent) -> ChatGenerationChunk:
        if isinstance(event, LiveChunk):
            return ChatGenerationChunk(message=strip_chunk(event.native))
        if isinstance(event, WholeAnswer):
            assert isinstance(event.output.raw, AIMessage)
            return ChatGenerationChunk(message=message_to_chunk(event.output.raw))
        if isinstance(event, LiveText):  # the start of a continuation after a broken stream
            return ChatGenerationChunk(message=AIMessageChunk(content=event.text))
        result = event.result
        model = result.answered_by.model
        content = _annotate("", model) if self.annotate and self._ladder.parser is None else ""
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=content, response_metadata={"model_name": model, "cascade": _cascade_metadata(result)}
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for event in self.engine.stream(self._call(messages, stop, run_manager, kwargs, False)):
            chunk = self._event_chunk(event)
            if run_manager is not None and not isinstance(event, Finished):
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for event in self.engine.astream(self._call(messages, stop, run_manager, kwargs, True)):
            chunk = self._event_chunk(event)
            if run_manager is not None and not isinstance(event, Finished):
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


# LangChain's generate() asks on every call whether _generate takes a run manager, with
# inspect.signature (~20 us); a function's __signature__ answers that without parsing it again.
for _method in ("_generate", "_agenerate"):
    _function = getattr(CascadeChatModel, _method)
    _function.__signature__ = inspect.signature(_function)


def _present(parsed: Any) -> Any:
    """A parse result, or the error ``include_raw`` reports: a tools parser returns None when the
    answer is text instead of the schema's tool call."""
    if parsed is None:
        raise OutputParserException(
            "the answer holds no structured output (it is text, not the schema's tool call)"
        )
    return parsed


CONFIGURABLE = {
    "cascade_start_at": "start_at",
    "cascade_thresholds": "thresholds",
    "cascade_max_cost_usd": "max_cost_usd",
    "cascade_deadline_s": "deadline_s",
    "cascade_route_metadata": "route_metadata",
}
"""``config["configurable"]`` keys read as this request's overrides (``with_config``)."""


def _configured(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the overrides a config's ``configurable`` asks for (explicit kwargs win)."""
    configurable = (config or {}).get("configurable") or {}
    found = {arg: configurable[key] for key, arg in CONFIGURABLE.items() if key in configurable}
    return {**found, **kwargs} if found else kwargs


def _cascade_metadata(result: Result, usage: Usage | None = None) -> dict[str, Any]:
    """``response_metadata["cascade"]``: the result, and the request's total tokens (every
    attempt and judge call), from which the caller's ``usage_metadata`` is set."""
    usage = result.usage if usage is None else usage
    return {
        **result.to_dict(),
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
    }


def _totals(message: BaseMessage) -> UsageMetadata | None:
    cascade = message.response_metadata.get("cascade")
    if not isinstance(cascade, dict) or "usage" not in cascade:
        return None
    return usage_metadata(Usage(cascade["usage"]["input_tokens"], cascade["usage"]["output_tokens"]))


def _with_totals(result: LLMResult) -> LLMResult:
    """The caller's copy of a result, after the callbacks saw it: each message gets its request's
    total usage, and ``llm_output`` the batch's as ``token_usage``.

    ``generate`` hands its caller an ``LLMResult`` of its own, with an ``llm_output`` made by
    ``_combine_llm_outputs``; only the generations (and their messages) are shared with what the
    callbacks received, so those are copied and the rest is updated in place.
    """

    def with_usage(gen: Generation) -> Generation:
        totals = _totals(gen.message) if isinstance(gen, ChatGeneration) else None
        if not isinstance(gen, ChatGeneration) or totals is None:
            return gen
        message = gen.message.model_copy(update={"usage_metadata": totals})
        # The text is the message's, unchanged by the usage: no need to derive it again.
        return ChatGeneration.model_construct(
            text=gen.text, message=message, generation_info=gen.generation_info, type=gen.type
        )

    result.generations = [[with_usage(g) for g in gens] for gens in result.generations]
    llm_output = result.llm_output
    if llm_output is not None and "cascade_token_usage" in llm_output:
        llm_output["token_usage"] = llm_output.pop("cascade_token_usage")
    return result


def _chunk_with_totals(chunk: AIMessageChunk) -> AIMessageChunk:
    if chunk.usage_metadata is not None:
        return chunk
    totals = _totals(chunk)
    return chunk if totals is None else chunk.model_copy(update={"usage_metadata": totals})
