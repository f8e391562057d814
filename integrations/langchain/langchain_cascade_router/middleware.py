"""``CascadeMiddleware``: the ladder applied to every model call of a ``create_agent`` agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langgraph.errors import GraphBubbleUp

from cascade_router.adaptation import ThresholdAdaptation
from cascade_router.attempts import Result
from cascade_router.backend import Backend, BackendBase
from cascade_router.circuit import CircuitBreakerSettings
from cascade_router.config import EarlyAbortSettings, HedgeSettings, Rung, ShadowSettings
from cascade_router.engine import Call, Engine
from cascade_router.ladder import Binding, Ladder, build_ladder
from cascade_router.model_io import ModelOutput, Request
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.policy import OnExhausted, OnPolicyError
from cascade_router.routing import RoutingRule
from langchain_cascade_router._backend import LANGCHAIN_BINDING, LangChainBackend
from langchain_cascade_router._convert import to_core_messages, to_output, tool_names, usage_metadata
from langchain_cascade_router._runs import NOSTREAM


def _ai_message(response: Any) -> AIMessage:
    """The model's answer inside whatever the inner handler returned."""
    if isinstance(response, AIMessage):
        return response
    inner = getattr(response, "model_response", response)  # ExtendedModelResponse
    for message in getattr(inner, "result", ()):
        if isinstance(message, AIMessage):
            return message
    raise TypeError(f"the agent's model call returned no AIMessage ({type(response).__name__})")


class _HandlerBackend(BackendBase):
    """A rung called through the agent's own model-call handler, so that tool binding,
    structured output and the other middleware apply to it exactly as to the agent's model."""

    __slots__ = ("_ahandler", "_handler", "_model", "_name", "_provider", "_request")

    def __init__(
        self,
        model: BaseChatModel,
        *,
        provider: str | None,
        name: str | None,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Any] | None,
        ahandler: Callable[[ModelRequest], Awaitable[Any]] | None,
    ) -> None:
        self._model = model
        self._provider = provider
        self._name = name
        self._request = request
        self._handler = handler
        self._ahandler = ahandler

    @property
    def provider(self) -> str | None:
        return self._provider

    @property
    def model(self) -> str | None:
        return self._name

    def _read(self, response: Any) -> ModelOutput:
        output = to_output(_ai_message(response))
        output.extra["response"] = response
        return output

    def invoke(self, request: Request) -> ModelOutput:
        assert self._handler is not None, "sync agent call without a sync handler"
        return self._read(self._handler(self._request.override(model=self._model)))

    async def ainvoke(self, request: Request) -> ModelOutput:
        assert self._ahandler is not None, "async agent call without an async handler"
        return self._read(await self._ahandler(self._request.override(model=self._model)))

    def stream(self, request: Request) -> Any:
        raise NotImplementedError("agent model calls are not streamed through the middleware")

    def astream(self, request: Request) -> Any:
        raise NotImplementedError("agent model calls are not streamed through the middleware")


# Interrupts (human-in-the-loop) are LangGraph control flow, not rung failures; the middleware
# always runs inside LangGraph.
_MIDDLEWARE_BINDING: Binding[BaseChatModel] = replace(LANGCHAIN_BINDING, propagate=(GraphBubbleUp,))


class CascadeMiddleware(AgentMiddleware):
    """Runs every model call of an agent through a ladder.

    ```python
    agent = create_agent(
        model="openai:gpt-5-nano",  # replaced on every call by the ladder's rungs
        tools=[...],
        middleware=[
            CascadeMiddleware(rungs=[{"model": cheap, "scorer": ..., "threshold": 0.8}, {"model": strong}])
        ],
    )
    ```

    Each rung is called through the agent's handler with the rung's model swapped in, so the
    agent's tools and response format are bound to it as usual. A well-formed tool call is
    accepted by default (``on_tool_call``); the agent's next model call is scored again.
    The accepted ``AIMessage`` carries ``response_metadata["cascade"]`` like
    ``CascadeChatModel``'s.
    """

    def __init__(
        self,
        rungs: Sequence[Rung | Mapping[str, Any]],
        *,
        name: str = "CascadeMiddleware",
        on_exhausted: OnExhausted = "raise",
        accept_last: bool = True,
        timeout: float | None = None,
        max_retries: int = 0,
        decision_log: str | Path | DecisionLog | None = None,
        tracing: bool = True,
        inference_spans: bool = True,
        shadow: ShadowSettings | Mapping[str, Any] | None = None,
        retry_max_wait: float = 20.0,
        first_token_timeout: float | None = None,
        stall_timeout: float | None = None,
        on_policy_error: OnPolicyError = "raise",
        circuit_breaker: CircuitBreakerSettings | Mapping[str, Any] | None = None,
        early_abort: EarlyAbortSettings | Mapping[str, Any] | None = None,
        hedge: HedgeSettings | Mapping[str, Any] | None = None,
        on_midstream_failure: Literal["raise", "continue"] = "raise",
        routing: Sequence[RoutingRule | Mapping[str, Any]] | None = None,
        adapt_thresholds: ThresholdAdaptation | Mapping[str, Any] | None = None,
    ) -> None:
        """The options are ``LadderSettings``' and mean what they mean on ``CascadeChatModel``."""
        super().__init__()
        self._name = name
        self.ladder: Ladder[BaseChatModel] = build_ladder(
            rungs,
            _MIDDLEWARE_BINDING,
            name=name,
            on_exhausted=on_exhausted,
            accept_last=accept_last,
            timeout=timeout,
            max_retries=max_retries,
            decision_log=decision_log,
            tracing=tracing,
            inference_spans=inference_spans,
            shadow=shadow,
            retry_max_wait=retry_max_wait,
            first_token_timeout=first_token_timeout,
            stall_timeout=stall_timeout,
            on_policy_error=on_policy_error,
            circuit_breaker=circuit_breaker,
            early_abort=early_abort,
            hedge=hedge,
            routing=routing,
            on_midstream_failure=on_midstream_failure,
            adapt_thresholds=adapt_thresholds,
        )
        # What the agent's handler calls for each rung: the rung's model, unstreamed. The
        # agent's stream would otherwise show every rung's answer token by token before it is
        # scored (LangGraph's "messages" mode, astream_events); the accepted answer reaches
        # the stream whole, as the model node's output. Tagged like CascadeChatModel's rung runs.
        self._unstreamed = [
            model.model_copy(
                update={
                    "tags": [*(model.tags or []), f"cascade:rung:{i}", NOSTREAM],
                    "disable_streaming": True,
                }
            )
            for i, model in enumerate(self.ladder.models)
        ]

    @property
    def name(self) -> str:
        return self._name

    @property
    def engine(self) -> Engine:
        return self.ladder.engine

    def record_feedback(
        self, request_id: str, score: float | bool, *, comment: str | None = None, rung: int | None = None
    ) -> None:
        """Attach a quality label in [0, 1] (or a thumbs up / down) to a logged request."""
        self.ladder.record_feedback(request_id, score, comment=comment, rung=rung)

    def _call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Any] | None,
        ahandler: Callable[[ModelRequest], Awaitable[Any]] | None,
    ) -> Call:
        ladder = self.ladder
        backends = [
            _HandlerBackend(
                m, provider=ident[0], name=ident[1], request=request, handler=handler, ahandler=ahandler
            )
            for m, ident in zip(self._unstreamed, ladder.identities, strict=True)
        ]

        def resolve(model: Any, rung: int) -> Backend:
            judge, provider, name = ladder.judge(model, rung)
            return LangChainBackend(judge, provider=provider, model=name)

        messages = ([request.system_message] if request.system_message else []) + list(request.messages)
        return Call(
            Request(
                messages,
                to_messages=to_core_messages,
                tool_names=tool_names(request.tools) if request.tools else None,
            ),
            backends,
            resolve,
        )

    @staticmethod
    def _response(result: Result) -> Any:
        response = result.output.extra["response"]
        message = _ai_message(response)
        annotated = message.model_copy(
            update={
                "response_metadata": {
                    **message.response_metadata,
                    "model_name": result.answered_by.model,
                    "cascade": result.to_dict(),
                },
                "usage_metadata": usage_metadata(result.usage),
            }
        )
        if isinstance(response, AIMessage):
            return annotated
        inner = getattr(response, "model_response", response)
        messages = [annotated if m is message else m for m in inner.result]
        return ModelResponse(result=messages, structured_response=inner.structured_response)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        return self._response(self.engine.run(self._call(request, handler, None)))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> Any:
        return self._response(await self.engine.arun(self._call(request, None, handler)))
