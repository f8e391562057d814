"""``Cascade``: a ladder of core ``Backend`` rungs, usable without any LLM framework."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

from cascade_router.adaptation import ThresholdAdaptation
from cascade_router.attempts import Result
from cascade_router.backend import Backend
from cascade_router.backends import backend_from
from cascade_router.circuit import CircuitBreakerSettings
from cascade_router.config import (
    EarlyAbortSettings,
    HedgeSettings,
    LadderConfig,
    Rung,
    ShadowSettings,
    load_config,
)
from cascade_router.engine import Call, Engine, StreamEvent
from cascade_router.ladder import Binding, Ladder, build_ladder
from cascade_router.model_io import Message, Request
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.policy import OnExhausted, OnPolicyError
from cascade_router.routing import RoutingRule

Prompt = str | Sequence[Message] | Request

CORE_BINDING: Binding[Backend] = Binding(
    resolve=backend_from,
    identity=lambda b: (b.provider, b.model),
    returns_logprobs=lambda b: b.returns_logprobs,
)
"""Rungs and judges as core backends: objects, ``provider:model`` strings or mappings."""


def _request(prompt: Prompt) -> Request:
    if isinstance(prompt, Request):
        return prompt
    if isinstance(prompt, str):
        return Request.from_text(prompt)
    if isinstance(prompt, Sequence) and all(isinstance(m, Message) for m in prompt):
        return Request(messages=[m for m in prompt if isinstance(m, Message)])
    raise TypeError(f"expected a prompt string, a list of Message or a Request, got {type(prompt).__name__}")


StartAt = int | str | None
Thresholds = Mapping[int | str, float] | None


class RouteOptions(TypedDict, total=False):
    """One request's inputs to the routing rules (``docs/routing.md``)."""

    max_cost_usd: float | None
    """The most this request may cost (the ``cost`` rule)."""
    deadline_s: float | None
    """Seconds this request may take (the ``deadline`` rule)."""
    route_metadata: Mapping[str, Any] | None
    """Items the ``domain`` and ``budget`` rules read (``{"tenant": "acme"}``)."""


class Cascade:
    """Runs a ladder whose models are ``Backend`` objects (native SDK backends, replays, fakes),
    with no LLM framework involved.

    A rung's ``model`` may be a ``Backend``, a ``provider:model`` string (``openai:gpt-4o-mini``,
    ``anthropic:claude-haiku-4-5``) or a mapping with ``provider``, ``model`` and backend options.
    ``invoke`` returns a ``Result``: ``result.output.text`` is the answer, ``result.answered_by``
    the attempt that gave it, ``result.attempts`` every rung call.
    """

    def __init__(
        self,
        rungs: Sequence[Rung | Mapping[str, Any]],
        *,
        name: str = "cascade",
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
        """The options are ``LadderSettings``' and mean the same on every entry point:
        ``timeout`` / ``max_retries`` are defaults for rungs that set none; ``decision_log`` a
        SQLite path, a SQLAlchemy URL or a ``DecisionLog`` that gets one record per request;
        ``tracing`` emits OpenTelemetry spans through the global tracer provider;
        ``inference_spans`` one ``chat {model}`` span per model call (turn off beside a provider
        instrumentation, which makes its own); ``shadow`` samples requests whose remaining
        rungs are called off the request path and logged (``ShadowSettings``)."""
        self.name = name
        self.ladder: Ladder[Backend] = build_ladder(
            rungs,
            CORE_BINDING,
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

    @classmethod
    def from_config(cls, source: str | Path | Mapping[str, Any] | LadderConfig, **options: Any) -> Cascade:
        """A cascade from a config file or mapping; ``options`` override its settings."""
        config = source if isinstance(source, LadderConfig) else load_config(source)
        fields = config.adapter_fields()
        fields.pop("annotate")  # the core returns results, not messages to annotate
        return cls(**{**fields, **options})

    @property
    def rungs(self) -> list[Rung]:
        return self.ladder.rungs

    @property
    def backends(self) -> list[Backend]:
        return self.ladder.models

    @property
    def engine(self) -> Engine:
        return self.ladder.engine

    @property
    def decision_log(self) -> DecisionLog | None:
        return self.ladder.decision_log

    def __repr__(self) -> str:
        return f"Cascade({self.ladder.label!r}, name={self.name!r})"

    def _call(
        self, prompt: Prompt, start_at: StartAt = None, thresholds: Thresholds = None, **route: Any
    ) -> Call:
        return self.prepare(prompt, start_at=start_at, thresholds=thresholds, **route)

    def prepare(
        self,
        prompt: Prompt,
        *,
        request_id: str | None = None,
        otel_context: Any = None,
        start_at: StartAt = None,
        thresholds: Thresholds = None,
        **route: Unpack[RouteOptions],
    ) -> Call:
        """One request, ready for ``engine.run`` / ``arun`` / ``stream`` / ``astream``, with the
        id it is logged under and the OpenTelemetry context its spans join chosen by the caller
        (a server names the request in its response headers before the answer exists)."""
        overrides = self.ladder.overrides(start_at, thresholds, **route)
        return Call(
            _request(prompt),
            self.ladder.models,
            self._resolve,
            otel_context=otel_context,
            overrides=overrides,
            request_id=request_id,
        )

    def _resolve(self, model: Any, rung: int) -> Backend:
        return self.ladder.judge(model, rung)[0]

    # ``start_at`` (a rung's name or index) skips the rungs below it for this request;
    # ``thresholds`` ({rung: threshold}) replaces rungs' thresholds for this request;
    # ``max_cost_usd``, ``deadline_s`` and ``route_metadata`` ({"tenant": ...}) are this
    # request's inputs to the routing rules (``routing``).

    def invoke(
        self,
        prompt: Prompt,
        *,
        start_at: StartAt = None,
        thresholds: Thresholds = None,
        **route: Unpack[RouteOptions],
    ) -> Result:
        return self.ladder.engine.run(self._call(prompt, start_at, thresholds, **route))

    async def ainvoke(
        self,
        prompt: Prompt,
        *,
        start_at: StartAt = None,
        thresholds: Thresholds = None,
        **route: Unpack[RouteOptions],
    ) -> Result:
        return await self.ladder.engine.arun(self._call(prompt, start_at, thresholds, **route))

    def stream(
        self,
        prompt: Prompt,
        *,
        start_at: StartAt = None,
        thresholds: Thresholds = None,
        **route: Unpack[RouteOptions],
    ) -> Iterator[StreamEvent]:
        """Events: ``LiveChunk`` / ``WholeAnswer`` carry the answer, ``Finished`` the result."""
        return self.ladder.engine.stream(self._call(prompt, start_at, thresholds, **route))

    def astream(
        self,
        prompt: Prompt,
        *,
        start_at: StartAt = None,
        thresholds: Thresholds = None,
        **route: Unpack[RouteOptions],
    ) -> AsyncIterator[StreamEvent]:
        return self.ladder.engine.astream(self._call(prompt, start_at, thresholds, **route))

    def record_feedback(
        self, request_id: str, score: float | bool, *, comment: str | None = None, rung: int | None = None
    ) -> None:
        """Attach a quality label in [0, 1] (or a thumbs up / down) to a logged request."""
        self.ladder.record_feedback(request_id, score, comment=comment, rung=rung)

    def __enter__(self) -> Cascade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the backends' sync HTTP clients (also on leaving a ``with`` block)."""
        for backend in self._all_backends():
            backend.close()

    async def aclose(self) -> None:
        """Close the backends' async HTTP clients."""
        for backend in self._all_backends():
            await backend.aclose()

    def _all_backends(self) -> list[Backend]:
        seen: dict[int, Backend] = {}
        for backend in [*self.ladder.models, *(e[1] for e in self.ladder.judges.entries)]:
            seen.setdefault(id(backend), backend)
        return list(seen.values())
