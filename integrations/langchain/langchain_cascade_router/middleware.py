"""``CascadeMiddleware``: the ladder applied to every model call of a ``create_agent`` agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langgraph.errors import GraphBubbleUp

from cascade_router.attempts import Result
from cascade_router.backend import Backend
from cascade_router.config import Rung, as_rungs, check_ladder
from cascade_router.decision_log import DecisionLog, shared_log
from cascade_router.engine import Call, Engine, model_key, resolve_judges, runtimes_for
from cascade_router.model_io import ModelOutput, Request
from cascade_router.policy import OnExhausted
from cascade_router.telemetry import Telemetry
from langchain_cascade_router._backend import LangChainBackend, model_identity
from langchain_cascade_router._convert import to_core_messages, to_output, tool_names, usage_metadata
from langchain_cascade_router._resolve import resolve_chat_model


def _ai_message(response: Any) -> AIMessage:
    """The model's answer inside whatever the inner handler returned."""
    if isinstance(response, AIMessage):
        return response
    inner = getattr(response, "model_response", response)  # ExtendedModelResponse
    for message in getattr(inner, "result", ()):
        if isinstance(message, AIMessage):
            return message
    raise TypeError(f"the agent's model call returned no AIMessage ({type(response).__name__})")


class _HandlerBackend:
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
        on_exhausted: OnExhausted = "raise",
        accept_last: bool = True,
        name: str = "CascadeMiddleware",
        decision_log: str | DecisionLog | None = None,
        tracing: bool = True,
        inference_spans: bool = True,
    ) -> None:
        """``decision_log``, ``tracing`` and ``inference_spans`` mean what they mean on
        ``CascadeChatModel``."""
        super().__init__()
        parsed = as_rungs(list(rungs))
        check_ladder(parsed, accept_last=accept_last)
        self._name = name
        self.models = [resolve_chat_model(r.model, f"rungs[{i}].model") for i, r in enumerate(parsed)]
        self.identities = [model_identity(m) for m in self.models]
        self.judges = resolve_judges(parsed, resolve_chat_model, model_identity)
        runtimes = runtimes_for(parsed, self.identities, [f"rung{i}" for i in range(len(parsed))])
        # Interrupts (human-in-the-loop) are LangGraph control flow, not rung failures.
        self.engine = Engine(
            runtimes,
            on_exhausted,
            accept_last=accept_last,
            propagate=(GraphBubbleUp,),
            name=name,
            telemetry=Telemetry(
                name, [r.name for r in runtimes], enabled=tracing, inference_spans=inference_spans
            ),
            decision_log=shared_log(decision_log) if decision_log is not None else None,
        )

    @property
    def name(self) -> str:
        return self._name

    def _call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Any] | None,
        ahandler: Callable[[ModelRequest], Awaitable[Any]] | None,
    ) -> Call:
        backends = [
            _HandlerBackend(
                m, provider=ident[0], name=ident[1], request=request, handler=handler, ahandler=ahandler
            )
            for m, ident in zip(self.models, self.identities, strict=True)
        ]

        def resolve(model: Any, rung: int) -> Backend:
            if model is None:
                return LangChainBackend(
                    self.models[rung], provider=self.identities[rung][0], model=self.identities[rung][1]
                )
            judge, provider, name = self.judges[model_key(model)]
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
