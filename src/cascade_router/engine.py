"""The drivers that run a ladder: sync, async, sync streaming and async streaming.

They all follow ``policy``: call the rung it names, check and score the answer, ask it for a
verdict, repeat. What differs is only how a model is called and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from cascade_router import policy
from cascade_router.adaptation import ThresholdAdapter
from cascade_router.attempts import Attempt, Result
from cascade_router.backend import Backend
from cascade_router.circuit import CircuitBreakers
from cascade_router.errors import (
    CircuitOpenError,
    RequestRefusedError,
    RoutedAroundError,
    RungTimeoutError,
    ScorerError,
)
from cascade_router.failures import classify, retry_after, status_of
from cascade_router.hedging import HedgeState
from cascade_router.model_io import Message, ModelOutput, Request, Usage
from cascade_router.observability.decision_log import DecisionLog, Deferred
from cascade_router.observability.drift import DriftWatch
from cascade_router.observability.shadow import ShadowSampler
from cascade_router.observability.signal_watch import SignalWatch
from cascade_router.observability.telemetry import CallSpan, RequestSpan, RungSpan, Telemetry
from cascade_router.policy import Evidence
from cascade_router.pricing import Price, cost_usd
from cascade_router.records import (
    config_hash,
    error_text,
    exhausted_error,
    ladder_summary,
    midstream_error,
    request_record,
)
from cascade_router.routing import RequestLimits, RouteContext, Router
from cascade_router.scorers import Score, structural_problem
from cascade_router.scorers.base import as_probability
from cascade_router.scorers.validity import EMPTY_ANSWER
from cascade_router.timeouts import ChunkPump, call_with_timeout

if TYPE_CHECKING:
    from cascade_router.config import EarlyAbortSettings, HedgeSettings
    from cascade_router.ladder import RungRuntime

T = TypeVar("T")
log = logging.getLogger("cascade_router.engine")

OnLowPrefix = Callable[[str], None]
"""Told, with the reason, when a streamed scored rung's prefix is low enough to hedge."""

Resolver = Callable[[Any, int], Backend]
"""``resolve(model, rung)``: a judge's model reference as a backend bound to the current call;
``model=None`` asks for rung ``rung``'s own model (self-check), without tools or schema bound."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request's view of the ladder: a backend per rung, bound to this call's options."""

    request: Request
    backends: Sequence[Backend]
    resolve: Resolver
    otel_context: Any = None
    """The OpenTelemetry context to trace under, captured when the call was made. Needed where a
    stream is consumed after the call returned (LlamaIndex): by then the caller's span may be
    closed and the current context another one. None: the context current when the request starts."""
    overrides: Overrides | None = None
    """This request's own start rung and thresholds (``resolve_overrides``)."""
    shadow_backends: Sequence[Backend] | None = None
    """The backends shadow calls use, when they must differ from ``backends`` (an adapter's
    backends that report to the request's callbacks, which ended with it); None: ``backends``."""
    shadow_resolve: Resolver | None = None
    """The judges' resolver for shadow calls, likewise; None: ``resolve``."""
    started: float = field(default_factory=time.perf_counter)
    """When the call was made: the start of its deadline."""
    scratch: dict[str, Any] = field(default_factory=dict, compare=False)
    """What the engine works out once per request (the routing rules' view of it)."""
    request_id: str | None = None
    """The id the request is logged and traced under; None: a new random one. A server that
    must name the request before it ends (a streamed response's headers) chooses it."""


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-request changes to the ladder: where to start and which thresholds to use."""

    start_at: int = 0
    """The first rung to call; the ones below it are skipped (a premium user straight to the
    strong model, say)."""
    thresholds: Mapping[int, float] = field(default_factory=dict)
    """Rung index to the threshold this request uses instead of the rung's own."""
    limits: RequestLimits | None = None
    """This request's cost limit, deadline and metadata, for the routing rules."""


@dataclass(frozen=True, slots=True)
class _InFlight:
    """One request while the engine runs it."""

    span: RequestSpan
    request_id: str
    t0: float
    attempts: list[Attempt]
    request: Request | None = None
    call: Call | None = None


@dataclass(frozen=True, slots=True)
class LiveChunk:
    """A chunk of the answer of a rung that streams straight to the caller."""

    native: Any
    rung: int


@dataclass(frozen=True, slots=True)
class WholeAnswer:
    """A buffered rung's accepted answer, emitted in one piece."""

    output: ModelOutput
    rung: int


@dataclass(frozen=True, slots=True)
class Finished:
    result: Result


@dataclass(frozen=True, slots=True)
class LiveText:
    """Text of a live rung's answer that is not one of its own chunks: the start of a
    continuation after a stream broke (``on_midstream_failure: continue``), with what the
    caller had already seen cut off."""

    text: str
    rung: int


StreamEvent = LiveChunk | LiveText | WholeAnswer | Finished


class _Scoring:
    """The ``ScoringContext`` of one attempt: runs judge calls and tallies what they cost."""

    __slots__ = ("_call", "_rung", "_span", "cost", "usage")

    def __init__(self, call: Call, rung: int, span: RungSpan) -> None:
        self._call = call
        self._rung = rung
        self._span = span
        self.usage = Usage()
        self.cost: float | None = 0.0

    def _backend(self, model: Any | None) -> Backend:
        return self._call.resolve(model, self._rung)

    def _count(self, backend: Backend, output: ModelOutput, price: Price | None) -> None:
        if output.usage is not None:
            self.usage = self.usage + output.usage
        cost = cost_usd(
            output.usage, provider=backend.provider, model=output.model or backend.model, price=price
        )
        self.cost = None if cost is None or self.cost is None else self.cost + cost

    def invoke(self, model: Any | None, request: Request, *, price: Price | None = None) -> ModelOutput:
        backend = self._backend(model)
        span = self._span.call(backend, request, role="judge")
        try:
            with span.active():
                output = backend.invoke(request)
        except BaseException as exc:
            span.finish(error=exc)
            raise
        span.finish(output)
        self._count(backend, output, price)
        return output

    async def ainvoke(
        self, model: Any | None, request: Request, *, price: Price | None = None
    ) -> ModelOutput:
        backend = self._backend(model)
        span = self._span.call(backend, request, role="judge")
        try:
            with span.active():
                output = await backend.ainvoke(request)
        except BaseException as exc:
            span.finish(error=exc)
            raise
        span.finish(output)
        self._count(backend, output, price)
        return output


class Engine:
    """Runs requests through a ladder. Stateless between requests; safe to share.

    Built by ``ladder.build_ladder``; entry points never construct it themselves.
    """

    def __init__(
        self,
        rungs: Sequence[RungRuntime],
        on_exhausted: policy.OnExhausted = "raise",
        *,
        accept_last: bool = True,
        propagate: tuple[type[BaseException], ...] = (),
        name: str = "cascade",
        telemetry: Telemetry | None = None,
        decision_log: DecisionLog | None = None,
        shadow: ShadowSampler | None = None,
        retry_max_wait: float = 20.0,
        breakers: CircuitBreakers | None = None,
        early_abort: EarlyAbortSettings | None = None,
        hedge: HedgeSettings | None = None,
        on_midstream_failure: Literal["raise", "continue"] = "raise",
        router: Router | None = None,
        thresholds: ThresholdAdapter | None = None,
    ) -> None:
        """``propagate``: exception types that are control flow, not rung failures (LangGraph's
        interrupts, say); they pass through instead of falling back. ``telemetry`` defaults to
        spans through the global tracer provider (no-ops until one is configured)."""
        if not rungs:
            raise ValueError("an engine needs at least one rung")
        self.rungs = tuple(rungs)
        self.on_exhausted: policy.OnExhausted = on_exhausted
        self.accept_last = accept_last
        self.propagate = propagate
        self.name = name
        self.ladder = ladder_summary(self.rungs)
        """The ladder as recorded in the decision log: names, models, rules; never a secret."""
        self.config_hash = config_hash(name, self.ladder, accept_last, on_exhausted)
        self.telemetry = telemetry or Telemetry(name, [r.name for r in self.rungs])
        self.decision_log = decision_log
        self.shadow = shadow
        """Samples requests whose remaining rungs are called off the request path (None: off)."""
        self.retry_max_wait = retry_max_wait
        """A ``Retry-After`` longer than this moves the request to the next rung instead."""
        self.breakers = breakers
        """The rungs' circuit breakers (None: off)."""
        self.early_abort = early_abort
        """The early-abort mode's settings (None: buffered)."""
        self._unstreamable: set[int] = set()
        """Rungs whose streams lack the logprobs their scorer needs: never early-aborted."""
        self.on_midstream_failure = on_midstream_failure
        """``continue``: a live stream that breaks after output reached the caller goes on
        on the next rung that streams live."""
        self.hedging = HedgeState(hedge, len(self.rungs)) if hedge is not None else None
        """The hedged mode's latencies and budget (None: off)."""
        self.router = router
        """The routing rules, asked before the request and before each rung (None: none)."""
        self.adapter = thresholds
        """The thresholds that move with labelled feedback (None: as configured)."""
        self.learns_from_feedback = thresholds is not None or (router is not None and router.learns)
        """Whether ``feedback`` teaches anything."""
        self.signal_watch = SignalWatch(name)
        self.drift_watch = DriftWatch(name)
        """Warns when a rung's scorer keeps getting no signal (every request then escalates)."""

    # -- per request ---------------------------------------------------------------------------

    def _start(self, call: Call) -> _InFlight:
        if not call.request.has_turn():
            raise ValueError(
                "the request has no message to answer (it is empty or holds only a system prompt); "
                "no rung was called"
            )
        if self.hedging is not None:
            self.hedging.count_request()
        # 128 random bits as hex, like uuid4().hex, at a fraction of its cost.
        return _InFlight(
            self.telemetry.start_request(call.otel_context, call.request),
            call.request_id or os.urandom(16).hex(),
            time.perf_counter(),
            [],
            call.request,
            call,
        )

    def _done(self, state: _InFlight, result: Result | None, error: BaseException | None) -> None:
        """Close the request's span and queue its decision-log record; never raises."""
        if self.router is not None and self.router.needs_finish and state.call is not None:
            self._teach(state.call, state.attempts, state.request_id)
        if self.adapter is not None:
            self.adapter.remember(state.request_id, state.attempts)
        if result is not None:
            result.request_id = state.request_id
            result.trace_id = state.span.trace_id
        elif error is not None:
            # Lets a caller that catches the error find the request in the log; some
            # exception types forbid new attributes.
            with contextlib.suppress(Exception):
                error.request_id = state.request_id  # type: ignore[attr-defined]
        state.span.finish(state.request_id, state.attempts, result, error)
        log = self.decision_log
        if log is None:
            return
        # Only the times are taken here; the row is built on the writer thread.
        created_at, latency_s = datetime.now(UTC), time.perf_counter() - state.t0

        def write(shadowed: Sequence[Attempt] = ()) -> None:
            log.record(
                Deferred(
                    state.request_id,
                    partial(
                        request_record,
                        request_id=state.request_id,
                        trace_id=state.span.trace_id,
                        cascade=self.name,
                        config_hash=self.config_hash,
                        ladder=self.ladder,
                        created_at=created_at,
                        latency_s=latency_s,
                        attempts=state.attempts,
                        result=result,
                        error=error,
                        request=state.request,
                        store_content=log.store_content,
                        shadow_attempts=shadowed,
                    ),
                )
            )

        shadow, call = self.shadow, state.call
        if (
            shadow is not None
            and call is not None
            and result is not None
            and result.answered_by.rung < len(self.rungs) - 1
            and shadow.submit(partial(self._shadow, call, result.answered_by.rung + 1, write))
        ):
            return  # the shadow job writes the record when its calls end
        write()

    def feedback(self, request_id: str, quality: float, rung: int | None = None) -> None:
        """A label for a finished request's answer: moves adapted thresholds, teaches an
        adapting pre-router. Never raises (it is learning, not the request)."""
        try:
            if self.adapter is not None:
                self.adapter.feedback(request_id, quality, rung)
            if self.router is not None and self.router.learns:
                good = quality >= (self.adapter.settings.good_at if self.adapter is not None else 0.5)
                self.router.feedback(request_id, good, rung)
        except Exception:
            log.warning("learning from feedback on %s failed", request_id, exc_info=True)

    def _teach(self, call: Call, attempts: Sequence[Attempt], request_id: str) -> None:
        """What the routing rules learn from a finished request: each rung's latency (for
        deadlines), a provider's "too long" refusals (for context windows), the outcomes the
        pre-router adapts to."""
        router = self.router
        assert router is not None
        ctx = self._route_ctx(call, attempts)
        ctx.request_id = request_id
        for attempt in attempts:
            if attempt.decision in ("accept", "escalate"):
                if router.needs_latencies and attempt.latency_s is not None:
                    router.latencies.observe(attempt.rung, attempt.latency_s)
            elif attempt.decision == "error" and attempt.error_class is not None:
                router.learn(ctx, self.rungs[attempt.rung], attempt.error_class)
        router.finish(ctx)

    def _shadow(self, call: Call, first: int, write: Callable[[Sequence[Attempt]], None]) -> float | None:
        """The rungs from ``first`` up, called for the log only (untraced, on a shadow thread),
        then the request's record with them; returns what they cost (None: unknown)."""
        attempts: list[Attempt] = []
        try:
            shadow_call = Call(
                call.request, call.shadow_backends or call.backends, call.shadow_resolve or call.resolve
            )
            for index in range(first, len(self.rungs)):
                self._attempt(shadow_call, index, self.telemetry.untraced, attempts)
        finally:
            for attempt in attempts:
                attempt.shadow = True
            write(attempts)  # whatever happened, the live record is written
        cost: float | None = 0.0
        for attempt in attempts:
            c = attempt.total_cost_usd
            cost = None if c is None or cost is None else cost + c
        return cost

    # -- pieces shared by every driver -------------------------------------------------------

    def _final(self, index: int) -> bool:
        return policy.is_final(index, len(self.rungs), self.accept_last)

    def _error_attempt(
        self,
        rung: RungRuntime,
        backend: Backend,
        exc: Exception,
        t0: float,
        attempts: Sequence[Attempt],
        *,
        retry: bool = True,
    ) -> Attempt:
        """``retry=False``: never the same rung again (a stream that broke after output reached
        the caller is not restarted on its own rung)."""
        error_class = classify(exc)
        tries = 1
        for earlier in reversed(attempts):
            if earlier.rung != rung.index or earlier.decision != "error":
                break
            tries += 1
        wait = retry_after(exc)
        bound = policy.retry_delay(
            rung, error_class, tries=tries, retry_after=wait, max_wait=self.retry_max_wait
        )
        # Equal jitter: between half the bound and the bound, so that clients that failed
        # together do not retry together, yet never sooner than the provider asked.
        retry_in = (
            None if bound is None or not retry else max(wait or 0.0, bound * (0.5 + random.random() / 2))
        )
        evidence = Evidence(
            error=exc,
            error_class=error_class,
            retry_in=retry_in,
            halt=policy.halts(rung, error_class),
        )
        if self.breakers is not None:
            self.breakers.record(rung.index, ok=False, error_class=error_class)
        verdict = policy.decide(rung, evidence, final=self._final(rung.index))
        return Attempt(
            rung=rung.index,
            name=rung.name,
            provider=rung.provider,
            model=rung.model or backend.model,
            decision=verdict.decision,
            reason=verdict.reason,
            threshold=rung.threshold,
            error=error_text(exc),
            error_class=error_class,
            exception=exc,
            # A provider that answered with an HTTP error refused the request: nothing to pay.
            # Otherwise unknown, not 0: a call that failed may still have been billed (a
            # timeout after the request was sent, a stream cut off after some tokens).
            cost_usd=0.0 if status_of(exc) is not None else None,
            latency_s=time.perf_counter() - t0,
            evidence=evidence,
        )

    def _abandoned_attempt(
        self,
        rung: RungRuntime,
        backend: Backend,
        exc: BaseException,
        t0: float,
        output: ModelOutput | None = None,
    ) -> Attempt:
        """The record of a rung call cut off by the caller (a cancellation, a closed stream,
        control flow such as an agent interrupt): it ran, so the log must show it."""
        usage = output.usage if output is not None else None
        provider = rung.provider or backend.provider
        model = (output.model if output is not None else None) or rung.model or backend.model
        return Attempt(
            rung=rung.index,
            name=rung.name,
            provider=provider,
            model=model,
            decision="abandoned",
            reason=f"abandoned: {type(exc).__name__}",
            threshold=rung.threshold,
            usage=usage,
            # Unknown without usage: the provider may bill a call the caller stopped waiting for.
            cost_usd=cost_usd(usage, provider=provider, model=model, price=rung.price)
            if usage is not None
            else None,
            latency_s=time.perf_counter() - t0,
            output=output,
        )

    def _pre_check(self, rung: RungRuntime, request: Request, output: ModelOutput) -> tuple[str | None, bool]:
        """(validity problem, whether to run the scorer)."""
        invalid = structural_problem(request, output) if rung.validate_output else None
        if invalid is not None:
            return invalid, False
        return None, policy.should_score(rung, is_tool_call=_is_tool_call(request, output))

    def _scorer_timeout(self, rung: RungRuntime) -> Callable[[], BaseException]:
        return lambda: ScorerError(
            f"the scorer of rung {rung.name!r} gave no score within {rung.timeout:g} s"
        )

    def _finish(
        self,
        request: Request,
        rung: RungRuntime,
        backend: Backend,
        output: ModelOutput,
        t0: float,
        *,
        invalid: str | None,
        score: Score | None,
        scorer_exc: Exception | None,
        scoring: _Scoring | None,
        ttft: float | None = None,
    ) -> Attempt:
        value: float | None = None
        scorer_error: str | None = None
        if scorer_exc is not None:
            scorer_error = error_text(scorer_exc)
        elif score is not None and score.value is not None:
            value = as_probability(score.value)
            if value is None:
                scorer_error = error_text(
                    ScorerError(f"{score.method} scorer returned {score.value!r:.80}, not a number in [0, 1]")
                )
        evidence = Evidence(
            invalid=invalid,
            malformed=invalid is not None
            and invalid != EMPTY_ANSWER
            and not (request.keep_unparsed and output.parse_error is not None),
            is_tool_call=_is_tool_call(request, output),
            score=value,
            missing=score.missing if score is not None else None,
            scorer_error=scorer_error,
        )
        verdict = policy.decide(rung, evidence, final=self._final(rung.index))
        model = output.model or rung.model or backend.model
        if score is not None:
            if value is not None:
                self.signal_watch.scored(rung.name)
            elif score.missing is not None:
                self.signal_watch.missing(rung.name, model, score.method, score.missing)
        method = "validity" if invalid is not None else (score.method if score is not None else None)
        details: dict[str, Any] = (
            dict(score.details) if score is not None else ({"problem": invalid} if invalid else {})
        )
        if (
            rung.calibration is not None
            and value is not None
            and invalid is None
            and rung.threshold is not None
        ):
            drift = self.drift_watch.observe(rung.name, rung.calibration, value, value >= rung.threshold)
            if drift is not None:
                details["drift"] = drift.as_attributes()
        return Attempt(
            rung=rung.index,
            name=rung.name,
            provider=rung.provider or backend.provider,
            model=model,
            decision=verdict.decision,
            reason=verdict.reason,
            threshold=rung.threshold,
            score=0.0 if invalid is not None else value,
            method=method,
            details=details,
            error=scorer_error,
            exception=scorer_exc,
            usage=output.usage,
            cost_usd=cost_usd(
                output.usage, provider=rung.provider or backend.provider, model=model, price=rung.price
            ),
            scorer_usage=scoring.usage if scoring is not None else Usage(),
            scorer_cost_usd=scoring.cost if scoring is not None else 0.0,
            latency_s=time.perf_counter() - t0,
            ttft_s=ttft,
            output=output,
            evidence=evidence,
        )

    def _conclude(self, attempts: list[Attempt]) -> Result:
        conclusion = policy.conclude(attempts, self.on_exhausted)
        if conclusion.outcome == "raised":
            # The rung's own error, as a bare model would raise it (an auth, bad-request or
            # content-policy error): no later rung's answer or error may stand in for it.
            exc = attempts[-1].exception
            assert exc is not None
            raise exc
        if conclusion.accepted is None:
            raise exhausted_error(attempts)
        return Result(attempts, conclusion.accepted, conclusion.outcome)

    def _route_ctx(self, call: Call, attempts: Sequence[Attempt] | None = None) -> RouteContext:
        """The routing rules' view of this request, made once and kept on the call; ``attempts``
        (when given) are the request's attempts so far."""
        ctx = call.scratch.get("route")
        if ctx is None:
            limits = call.overrides.limits if call.overrides is not None else None
            latencies = self.router.latencies if self.router is not None else None
            ctx = RouteContext(
                call.request, self.rungs, limits or RequestLimits(), call.started, latencies=latencies
            )
            call.scratch["route"] = ctx
        if attempts is not None:
            ctx.attempts = attempts
        return ctx

    def _admit(self, call: Call) -> None:
        """Raise ``RequestRefusedError`` when a routing rule refuses the request."""
        if self.router is None or not self.router.refuses:
            return
        refused = self.router.refusal(self._route_ctx(call))
        if refused is not None:
            raise RequestRefusedError(*refused)

    def _gate(
        self, call: Call, rung: RungRuntime, backend: Backend, req: RequestSpan, attempts: list[Attempt]
    ) -> bool:
        """Whether the rung may be called now; when its circuit breaker is open or a routing
        rule rules it out, the skipped attempt is recorded (with its span) and False returned."""
        breakers = self.breakers
        exc: Exception
        if breakers is not None and breakers.gate(rung.index) == "open":
            exc, reason, details = CircuitOpenError(rung.name, breakers.keys[rung.index]), "circuit open", {}
        elif self.router is not None and (ruled := self.router.skip(self._route_ctx(call, attempts), rung)):
            kind, why = ruled
            exc, reason, details = (
                RoutedAroundError(rung.name, kind, why),
                f"{why} ({kind} rule)",
                {"rule": kind},
            )
        else:
            return True
        attempt = Attempt(
            rung=rung.index,
            name=rung.name,
            provider=rung.provider or backend.provider,
            model=rung.model or backend.model,
            decision="skipped",
            reason=f"skipped: {reason}",
            threshold=rung.threshold,
            error=error_text(exc),
            error_class=None,
            exception=exc,
            cost_usd=0.0,  # not called: nothing to pay
            details=details,
            evidence=Evidence(error=exc),
        )
        span = req.rung(rung.index, rung.name, rung.model or backend.model)
        span.finish(attempt)
        attempts.append(attempt)
        return False

    def _succeeded(self, rung: RungRuntime) -> None:
        if self.breakers is not None:
            self.breakers.record(rung.index, ok=True)

    # -- mid-stream continuation ------------------------------------------------------------

    def _continues(self, index: int) -> bool:
        """Whether a live rung's text is tracked, to continue it elsewhere should it break."""
        return self.on_midstream_failure == "continue" and index + 1 < len(self.rungs)

    def _continuation(
        self, call: Call, index: int, name: str, exc: Exception, shown: list[str | None]
    ) -> _Continuation | None:
        """How to go on after live rung ``index`` broke mid-answer, or None: raise."""
        nxt = index + 1
        if self.on_midstream_failure != "continue" or nxt >= len(self.rungs) or not self._streams_live(nxt):
            return None
        if any(part is None for part in shown):  # a chunk whose text the backend cannot tell
            return None
        emitted = "".join(p for p in shown if p is not None)
        prefill = self.rungs[nxt].prefill
        turns = [*call.request.messages, Message("assistant", emitted)]
        if not prefill:
            turns.append(Message("user", CONTINUE_INSTRUCTION))
        request = Request(
            messages=turns,
            tool_names=call.request.tool_names,
            metadata=call.request.metadata,
            structured=call.request.structured,
        )
        return _Continuation(request, emitted, name, exc, prefill)

    def _splice_start(
        self, cont: _Continuation, backend: Backend, reader: LiveReader, chunk: Any, rung: RungRuntime
    ) -> tuple[str, Any]:
        """Read the continuation until what it repeats of the emitted text can be cut off;
        (its first new text, the next chunk)."""
        text = ""
        while chunk is not _END and len(text) < len(cont.emitted) + SPLICE_SLACK:
            part = chunk_text(backend, chunk)
            text += part or ""
            chunk = reader.next(rung.stall_timeout, "next chunk")
        return splice(cont.emitted, text), chunk

    async def _asplice_start(
        self, cont: _Continuation, backend: Backend, chunks: AsyncIterator[Any], chunk: Any, rung: RungRuntime
    ) -> tuple[str, Any]:
        text = ""
        while chunk is not _END and len(text) < len(cont.emitted) + SPLICE_SLACK:
            part = chunk_text(backend, chunk)
            text += part or ""
            chunk = await _anext_within(chunks, rung.stall_timeout, rung, "next chunk")
        return splice(cont.emitted, text), chunk

    # -- hedging --------------------------------------------------------------------------------

    def _hedge_plan(self, call: Call, index: int) -> tuple[float | None, bool] | None:
        """How rung ``index`` may be hedged with the next one: after a delay (None: not on
        time), and/or on a low prefix score; None: not at all (off, the final rung, no observed
        latency yet for a time-only hedge, the next rung's breaker open)."""
        hedging = self.hedging
        if hedging is None or self._final(index) or index + 1 >= len(self.rungs):
            return None
        if self.breakers is not None and self.breakers.gate(index + 1) == "open":
            return None
        settings = hedging.settings
        delay = hedging.delay(index) if settings.on_delay else None
        on_prefix = settings.on_prefix and self._aborts(self._rung(call, index))
        if delay is None and not on_prefix:
            return None
        return delay, on_prefix

    @staticmethod
    def _winner(first: list[Attempt], second: list[Attempt]) -> list[Attempt] | None:
        """The attempts of the call that decided a hedge race, or None while it goes on: an
        accepted answer wins, an error that ends the request ends it."""
        for mine in (first, second):
            if mine and (mine[-1].decision == "accept" or mine[-1].evidence.halt):
                return mine
        return None

    @staticmethod
    def _race_order(
        first: list[Attempt], second: list[Attempt], winner: list[Attempt] | None
    ) -> list[Attempt]:
        """The race's attempts in log order: the deciding call's last (the policy reads the last
        attempt), else the first rung's then the second's (on up the ladder from the second)."""
        if winner is None:
            return [*first, *second]
        loser = second if winner is first else first
        return [*loser, *winner]

    @staticmethod
    def _mark_hedge(second: list[Attempt], loser: list[Attempt], why: str) -> None:
        for attempt in second:
            attempt.details["hedge"] = why
        for attempt in loser:
            if attempt.decision == "abandoned":
                attempt.reason = "abandoned: the hedge's other call answered first"

    async def _amaybe_hedged(self, call: Call, index: int, req: RequestSpan, attempts: list[Attempt]) -> None:
        """Rung ``index``, hedged with the next rung when it is slow or its prefix is low
        (``HedgeSettings``)."""
        plan = self._hedge_plan(call, index)
        if plan is None:
            await self._aattempt(call, index, req, attempts)
            return
        delay, on_prefix = plan
        hedging = self.hedging
        assert hedging is not None
        low: list[str] = []
        low_seen = asyncio.Event()

        def on_low(why: str) -> None:
            low.append(why)
            low_seen.set()

        first: list[Attempt] = []
        second: list[Attempt] = []
        t0 = time.perf_counter()
        task_a: asyncio.Future[None] = asyncio.ensure_future(
            self._aattempt(call, index, req, first, on_low if on_prefix else None)
        )
        task_b: asyncio.Future[None] | None = None
        watch: asyncio.Future[bool] = asyncio.ensure_future(low_seen.wait())
        winner: list[Attempt] | None = None
        why = ""
        try:
            first_of: set[asyncio.Future[Any]] = {task_a, watch}
            await asyncio.wait(first_of, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            if task_a.done() or not hedging.take():
                await task_a
                return
            why = _hedge_reason(delay, time.perf_counter() - t0, low)
            task_b = asyncio.ensure_future(self._aattempt(call, index + 1, req, second))
            pending: set[asyncio.Future[None]] = {task_a, task_b}
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # control flow (an agent interrupt) passes through
                winner = self._winner(first, second)
        finally:
            # Also when the request itself is cancelled: the calls still running are cancelled
            # (each records its abandoned attempt) and every attempt is kept.
            watch.cancel()
            for running in (task_a, task_b):
                if running is not None and not running.done():
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
            if task_b is not None:
                self._mark_hedge(second, second if winner is first else first, why)
            attempts.extend(self._race_order(first, second, winner))

    def _maybe_hedged(self, call: Call, index: int, req: RequestSpan, attempts: list[Attempt]) -> None:
        """The sync twin of ``_amaybe_hedged``: both calls run on threads of their own. A sync
        call cannot be cancelled, so the losing call is left to finish on its thread (its
        answer unread) and recorded as abandoned, its cost unknown."""
        plan = self._hedge_plan(call, index)
        if plan is None:
            self._attempt(call, index, req, attempts)
            return
        delay, on_prefix = plan
        hedging = self.hedging
        assert hedging is not None
        changed = threading.Condition()
        low: list[str] = []

        def on_low(why: str) -> None:
            with changed:
                low.append(why)
                changed.notify_all()

        races: list[_Racer] = [_Racer(self, call, index, req, changed, on_low=on_low if on_prefix else None)]
        t0 = time.perf_counter()
        races[0].start()
        with changed:
            changed.wait_for(lambda: races[0].finished or bool(low), timeout=delay)
        if races[0].finished or not hedging.take():
            races[0].join()
            attempts.extend(races[0].result())
            return
        why = _hedge_reason(delay, time.perf_counter() - t0, low)
        races.append(_Racer(self, call, index + 1, req, changed))
        races[1].start()
        winner: list[Attempt] | None = None
        with changed:
            while winner is None and not all(r.finished for r in races):
                changed.wait(timeout=0.5)
                winner = self._winner(races[0].snapshot(), races[1].snapshot())
            if winner is None:
                winner = self._winner(races[0].snapshot(), races[1].snapshot())
        for racer in races:
            racer.reraise()
        # The loser still running is abandoned to its thread: its record is made here.
        first, second = (r.snapshot() if r.finished else [r.abandoned()] for r in races)
        if winner is not None:
            winner = first if winner[-1].rung == index else second
        self._mark_hedge(second, second if winner is first else first, why)
        attempts.extend(self._race_order(first, second, winner))

    # -- early abort ----------------------------------------------------------------------------

    def _aborts(self, rung: RungRuntime) -> bool:
        """Whether this rung is streamed and judged while it generates (``early_abort``)."""
        s = self.early_abort
        return (
            s is not None
            and rung.scorer is not None
            and rung.threshold is not None
            and not self._final(rung.index)
            and rung.index not in self._unstreamable
        )

    def _lacks_signal(self, rung: RungRuntime, partial: ModelOutput) -> bool:
        """A rung whose scorer needs logprobs, streamed without them (many clients drop them on
        streamed calls): early abort is turned off for it, once, with a warning, and this call is
        made again whole; scoring its logprob-less stream would escalate every request."""
        scorer = rung.scorer
        if scorer is None or not scorer.needs_logprobs() or partial.logprobs is not None:
            return False
        self._unstreamable.add(rung.index)
        log.warning(
            "rung %r streams without token logprobs, which its %s scorer needs: early_abort is off "
            "for it (its answers are requested whole)",
            rung.name,
            scorer.method,
        )
        return True

    def _cannot_stream(self, rung: RungRuntime) -> _NoStreamSignal:
        """A rung whose model cannot stream here (an agent's model call through
        ``CascadeMiddleware``): early abort is off for it, once, with a warning; it is asked whole."""
        self._unstreamable.add(rung.index)
        log.warning(
            "rung %r cannot be streamed here: early_abort is off for it (its answers are requested whole)",
            rung.name,
        )
        return _NO_STREAM_SIGNAL

    def _judge_prefix(
        self, rung: RungRuntime, request: Request, partial: ModelOutput, n: int, *, hedging: bool
    ) -> _Aborted | str | None:
        """One prefix check (``policy.prefix_action``): the abandoned prefix, the reason to
        hedge (only when ``hedging``: a low-prefix hedge may still start), or None."""
        s, scorer, threshold = self.early_abort, rung.scorer, rung.threshold
        assert s is not None
        assert scorer is not None
        assert threshold is not None
        try:
            check = scorer.score_prefix(request, partial, threshold)
        except Exception:  # a broken prefix check must not cut a good answer off: score it whole
            return None
        if check is None:
            return None
        hedge = self.hedging.settings if self.hedging is not None else None
        action = policy.prefix_action(
            score=check.score,
            hopeless=check.hopeless,
            threshold=threshold,
            chunks=n,
            min_tokens=s.min_tokens,
            margin=s.margin,
            hedge_margin=hedge.prefix_margin if hedging and hedge is not None else None,
        )
        if action is None:
            return None
        what, why = action
        if what == "abort":
            return _Aborted(partial, why, n, check.score, scorer.method)
        return why

    @staticmethod
    def _chunk_limit(rung: RungRuntime, t0: float) -> tuple[float | None, str]:
        """The wait for the next chunk of a rung streamed internally: the stall limit, or what
        is left of the rung's total ``timeout`` when that is less."""
        stall = rung.stall_timeout
        if rung.timeout is None:
            return stall, "next chunk"
        left = max(0.0, rung.timeout - (time.perf_counter() - t0))
        if stall is None or left < stall:
            return left, "answer"
        return stall, "next chunk"

    def _stream_scored(
        self, rung: RungRuntime, backend: Backend, request: Request, on_low: OnLowPrefix | None = None
    ) -> ModelOutput | _Aborted | _NoStreamSignal:
        """A scored rung streamed from the provider (never to the caller) and judged every
        ``check_every`` chunks; the whole output, or the abandoned prefix. ``on_low`` is told,
        once, when a prefix is low enough to hedge (``HedgeSettings.when``)."""
        s = self.early_abort
        assert s is not None
        t0 = time.perf_counter()
        try:
            handle = backend.stream(request)
        except NotImplementedError:
            return self._cannot_stream(rung)
        partial = getattr(handle, "partial", None)
        reader = LiveReader(
            iter(handle), rung, pumped=rung.stall_timeout is not None or rung.timeout is not None
        )
        try:
            first, _ = self._first_limit(rung)
            chunk = reader.next(first, "first token")
            n = 0
            while chunk is not _END:
                n += 1
                if partial is not None and n % s.check_every == 0:
                    so_far = partial()
                    if self._lacks_signal(rung, so_far):
                        return _NO_STREAM_SIGNAL
                    verdict = self._judge_prefix(rung, request, so_far, n, hedging=on_low is not None)
                    if isinstance(verdict, _Aborted):
                        return verdict
                    if verdict is not None and on_low is not None:
                        on_low(verdict)
                        on_low = None
                chunk = reader.next(*self._chunk_limit(rung, t0))
            output = handle.output()
            # An answer shorter than one check: its missing logprobs are noticed here.
            return _NO_STREAM_SIGNAL if self._lacks_signal(rung, output) else output
        finally:
            reader.close()

    async def _astream_scored(
        self, rung: RungRuntime, backend: Backend, request: Request, on_low: OnLowPrefix | None = None
    ) -> ModelOutput | _Aborted | _NoStreamSignal:
        s = self.early_abort
        assert s is not None
        t0 = time.perf_counter()
        try:
            handle = backend.astream(request)
        except NotImplementedError:
            return self._cannot_stream(rung)
        partial = getattr(handle, "partial", None)
        chunks = aiter(handle)
        try:
            first, _ = self._first_limit(rung)
            chunk = await _anext_within(chunks, first, rung, "first token")
            n = 0
            while chunk is not _END:
                n += 1
                if partial is not None and n % s.check_every == 0:
                    so_far = partial()
                    if self._lacks_signal(rung, so_far):
                        return _NO_STREAM_SIGNAL
                    verdict = self._judge_prefix(rung, request, so_far, n, hedging=on_low is not None)
                    if isinstance(verdict, _Aborted):
                        return verdict
                    if verdict is not None and on_low is not None:
                        on_low(verdict)
                        on_low = None
                limit, what = self._chunk_limit(rung, t0)
                chunk = await _anext_within(chunks, limit, rung, what)
            output = handle.output()
            return _NO_STREAM_SIGNAL if self._lacks_signal(rung, output) else output
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    def _aborted_attempt(
        self, request: Request, rung: RungRuntime, backend: Backend, aborted: _Aborted, t0: float
    ) -> Attempt:
        """The record of an answer abandoned while it was generated: what its prefix cost."""
        evidence = Evidence(aborted=aborted.reason)
        verdict = policy.decide(rung, evidence, final=self._final(rung.index))
        provider = rung.provider or backend.provider
        model = aborted.partial.model or rung.model or backend.model
        usage = aborted.partial.usage
        details: dict[str, Any] = {"aborted_after_chunks": aborted.chunks}
        if usage is None:
            # The provider reports usage at the end of a stream, which an abandoned one never
            # reaches: a chunk is about a token, and the prompt about 4 characters a token.
            chars = sum(len(m.content) for m in request.messages)
            usage = Usage(max(1, chars // 4), aborted.chunks)
            details["usage_estimated"] = True
        return Attempt(
            rung=rung.index,
            name=rung.name,
            provider=provider,
            model=model,
            decision=verdict.decision,
            reason=verdict.reason,
            threshold=rung.threshold,
            score=aborted.score,
            method=aborted.method,
            details=details,
            usage=usage,
            cost_usd=cost_usd(usage, provider=provider, model=model, price=rung.price),
            latency_s=time.perf_counter() - t0,
            output=aborted.partial,
            evidence=evidence,
        )

    @staticmethod
    def _pause(attempts: Sequence[Attempt]) -> None:
        """Wait out the backoff the last (failed, retryable) attempt asked for."""
        if attempts and attempts[-1].decision == "error" and attempts[-1].evidence.retry_in:
            time.sleep(attempts[-1].evidence.retry_in)

    @staticmethod
    async def _apause(attempts: Sequence[Attempt]) -> None:
        if attempts and attempts[-1].decision == "error" and attempts[-1].evidence.retry_in:
            await asyncio.sleep(attempts[-1].evidence.retry_in)

    @staticmethod
    def _rung_timeout(rung: RungRuntime) -> Callable[[], BaseException]:
        return lambda: RungTimeoutError(rung.name, rung.timeout or 0.0)

    # -- sync ----------------------------------------------------------------------------------

    def _invoke_rung(self, rung: RungRuntime, backend: Backend, request: Request) -> ModelOutput:
        return call_with_timeout(
            partial(backend.invoke, request), rung.timeout, self._rung_timeout(rung), name=rung.name
        )

    def _rung(self, call: Call, index: int) -> RungRuntime:
        """Rung ``index`` as this request runs it (with its threshold override, if any)."""
        rung = self.rungs[index]
        overrides = call.overrides
        if overrides is not None and index in overrides.thresholds:
            rung = replace(rung, threshold=overrides.thresholds[index])
        elif self.adapter is not None and (moved := self.adapter.threshold(index)) != rung.threshold:
            rung = replace(rung, threshold=moved)
        router = self.router
        bound = router.timeout(self._route_ctx(call)) if router is not None and router.bounds_calls else None
        if bound is not None and (rung.timeout is None or bound < rung.timeout):
            # A deadline: the rung gets what is left of it, if that is less than its own timeout.
            rung = replace(rung, timeout=bound)
        return rung

    def _next(self, call: Call, attempts: list[Attempt]) -> int | None:
        start = call.overrides.start_at if call.overrides is not None else 0
        return policy.next_rung(attempts, len(self.rungs), start)

    def _attempt(
        self,
        call: Call,
        index: int,
        req: RequestSpan,
        attempts: list[Attempt],
        on_low: OnLowPrefix | None = None,
    ) -> None:
        """Call rung ``index`` and append its attempt (also when the call is cut off).
        ``on_low``: told when the rung's streamed prefix is low enough to hedge."""
        rung, backend = self._rung(call, index), call.backends[index]
        if not self._gate(call, rung, backend, req, attempts):
            return
        span = req.rung(index, rung.name, rung.model or backend.model)
        attempt: Attempt | None = None
        t0 = time.perf_counter()
        try:
            with span.active():
                model_span = span.call(backend, call.request, role="rung")
                try:
                    with model_span.active():
                        got = (
                            self._stream_scored(rung, backend, call.request, on_low)
                            if self._aborts(rung)
                            else self._invoke_rung(rung, backend, call.request)
                        )
                        if isinstance(got, _NoStreamSignal):
                            got = self._invoke_rung(rung, backend, call.request)
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t0, attempts)
                    return
                except BaseException as exc:
                    model_span.finish(error=exc)
                    raise
                if isinstance(got, _Aborted):
                    model_span.finish(got.partial)
                    self._succeeded(rung)
                    attempt = self._aborted_attempt(call.request, rung, backend, got, t0)
                    return
                output = got
                model_span.finish(output)
                self._succeeded(rung)
                if self.hedging is not None:
                    self.hedging.observe(index, time.perf_counter() - t0)
                try:
                    attempt = self._score_sync(call, rung, backend, output, t0, span=span)
                except BaseException as exc:
                    attempt = self._abandoned_attempt(rung, backend, exc, t0, output)
                    raise
        except BaseException as exc:
            if attempt is None:
                attempt = self._abandoned_attempt(rung, backend, exc, t0)
            raise
        finally:
            if attempt is not None:
                attempts.append(attempt)
            span.finish(attempt)

    def _score_sync(
        self,
        call: Call,
        rung: RungRuntime,
        backend: Backend,
        output: ModelOutput,
        t0: float,
        *,
        span: RungSpan,
        ttft: float | None = None,
    ) -> Attempt:
        invalid, wanted = self._pre_check(rung, call.request, output)
        score = scorer_exc = scoring = None
        if wanted:
            scorer = rung.scorer
            assert scorer is not None
            scoring = _Scoring(call, rung.index, span)
            try:
                score = call_with_timeout(
                    partial(scorer.score, call.request, output, scoring),
                    rung.timeout,
                    self._scorer_timeout(rung),
                    name=f"{rung.name} scorer",
                )
            except self.propagate:
                raise
            except Exception as exc:
                scorer_exc = exc
        return self._finish(
            call.request,
            rung,
            backend,
            output,
            t0,
            invalid=invalid,
            score=score,
            scorer_exc=scorer_exc,
            scoring=scoring,
            ttft=ttft,
        )

    def run(self, call: Call) -> Result:
        state = self._start(call)
        req, attempts = state.span, state.attempts
        try:
            self._admit(call)
            with req.active():
                while (index := self._next(call, attempts)) is not None:
                    self._pause(attempts)
                    self._maybe_hedged(call, index, req, attempts)
            result = self._conclude(attempts)
        except BaseException as exc:
            self._done(state, None, exc)
            raise
        self._done(state, result, None)
        return result

    # -- async ---------------------------------------------------------------------------------

    async def _ainvoke_rung(self, rung: RungRuntime, backend: Backend, request: Request) -> ModelOutput:
        if rung.timeout is None:
            return await backend.ainvoke(request)
        try:
            return await asyncio.wait_for(backend.ainvoke(request), rung.timeout)
        except TimeoutError:
            raise RungTimeoutError(rung.name, rung.timeout) from None

    async def _aattempt(
        self,
        call: Call,
        index: int,
        req: RequestSpan,
        attempts: list[Attempt],
        on_low: OnLowPrefix | None = None,
    ) -> None:
        rung, backend = self._rung(call, index), call.backends[index]
        if not self._gate(call, rung, backend, req, attempts):
            return
        span = req.rung(index, rung.name, rung.model or backend.model)
        attempt: Attempt | None = None
        t0 = time.perf_counter()
        try:
            with span.active():
                model_span = span.call(backend, call.request, role="rung")
                try:
                    with model_span.active():
                        got = (
                            await self._astream_scored(rung, backend, call.request, on_low)
                            if self._aborts(rung)
                            else await self._ainvoke_rung(rung, backend, call.request)
                        )
                        if isinstance(got, _NoStreamSignal):
                            got = await self._ainvoke_rung(rung, backend, call.request)
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t0, attempts)
                    return
                except BaseException as exc:  # a cancellation: the client went away
                    model_span.finish(error=exc)
                    raise
                if isinstance(got, _Aborted):
                    model_span.finish(got.partial)
                    self._succeeded(rung)
                    attempt = self._aborted_attempt(call.request, rung, backend, got, t0)
                    return
                output = got
                model_span.finish(output)
                self._succeeded(rung)
                if self.hedging is not None:
                    self.hedging.observe(index, time.perf_counter() - t0)
                try:
                    attempt = await self._score_async(call, rung, backend, output, t0, span=span)
                except BaseException as exc:
                    attempt = self._abandoned_attempt(rung, backend, exc, t0, output)
                    raise
        except BaseException as exc:
            if attempt is None:
                attempt = self._abandoned_attempt(rung, backend, exc, t0)
            raise
        finally:
            if attempt is not None:
                attempts.append(attempt)
            span.finish(attempt)

    async def _score_async(
        self,
        call: Call,
        rung: RungRuntime,
        backend: Backend,
        output: ModelOutput,
        t0: float,
        *,
        span: RungSpan,
        ttft: float | None = None,
    ) -> Attempt:
        invalid, wanted = self._pre_check(rung, call.request, output)
        score = scorer_exc = scoring = None
        if wanted:
            assert rung.scorer is not None
            scoring = _Scoring(call, rung.index, span)
            try:
                scored = rung.scorer.ascore(call.request, output, scoring)
                if rung.timeout is None:
                    score = await scored
                else:
                    try:
                        score = await asyncio.wait_for(scored, rung.timeout)
                    except TimeoutError:
                        raise self._scorer_timeout(rung)() from None
            except self.propagate:
                raise
            except Exception as exc:
                scorer_exc = exc
        return self._finish(
            call.request,
            rung,
            backend,
            output,
            t0,
            invalid=invalid,
            score=score,
            scorer_exc=scorer_exc,
            scoring=scoring,
            ttft=ttft,
        )

    async def arun(self, call: Call) -> Result:
        state = self._start(call)
        req, attempts = state.span, state.attempts
        try:
            self._admit(call)
            with req.active():
                while (index := self._next(call, attempts)) is not None:
                    await self._apause(attempts)
                    await self._amaybe_hedged(call, index, req, attempts)
            result = self._conclude(attempts)
        except BaseException as exc:
            self._done(state, None, exc)
            raise
        self._done(state, result, None)
        return result

    # -- probing, for offline evaluation ---------------------------------------------------------

    async def aprobe(self, call: Call) -> list[Attempt]:
        """Call every rung once, whatever the policy would do, and return the attempts.

        Offline evaluation replays the policy over these attempts for any thresholds; with
        replay backends this is exactly what live traffic would have produced. Not traced or
        logged: a probe is not a request.
        """
        return [await self.aprobe_rung(call, index) for index in range(len(self.rungs))]

    async def aprobe_rung(self, call: Call, index: int) -> Attempt:
        """One rung's attempt, as ``aprobe`` makes it (recording calls the rungs one by one);
        a retryable error is retried as a live request would retry it, and the last try kept."""
        tries: list[Attempt] = []
        while True:
            await self._aattempt(call, index, self.telemetry.untraced, tries)
            if tries[-1].decision != "error" or tries[-1].evidence.retry_in is None:
                return tries[-1]
            await self._apause(tries)

    # -- streaming -----------------------------------------------------------------------------

    def _streams_live(self, index: int) -> bool:
        return policy.streams_live(self.rungs[index], final=self._final(index))

    def _first_limit(self, rung: RungRuntime) -> tuple[float | None, str]:
        if rung.first_token_timeout is not None and (
            rung.timeout is None or rung.first_token_timeout < rung.timeout
        ):
            return rung.first_token_timeout, "first token"
        return rung.timeout, "first token"

    def _open_live(
        self, rung: RungRuntime, backend: Backend, request: Request
    ) -> tuple[Any, LiveReader, Any]:
        """Start a live stream and wait (within the first-token limit) for its first chunk."""
        handle = backend.stream(request)
        limit, what = self._first_limit(rung)
        reader = LiveReader(iter(handle), rung, pumped=rung.stall_timeout is not None)
        return handle, reader, reader.next(limit, what)

    # -- hedging a live rung on its first token --------------------------------------------------

    def _live_hedge_delay(self, call: Call, index: int) -> float | None:
        """The delay after which a live rung without a first token is hedged with the next rung
        (``when: slow`` or ``either``); None: not hedged."""
        plan = self._hedge_plan(call, index)
        return plan[0] if plan is not None else None

    def _live_call(
        self, call: Call, index: int, req: RequestSpan, raced: _LiveStart | None
    ) -> tuple[int, RungRuntime, Backend, RungSpan, CallSpan, float]:
        """The live call a stream driver goes on with: the race's winner, or rung ``index``
        with new spans (the call itself is opened by the driver)."""
        if raced is not None:
            return raced.index, raced.rung, raced.backend, raced.span, raced.model_span, raced.t0
        rung, backend = self._rung(call, index), call.backends[index]
        span = req.rung(index, rung.name, rung.model or backend.model)
        return (
            index,
            rung,
            backend,
            span,
            span.call(backend, call.request, role="rung", stream=True),
            time.perf_counter(),
        )

    def _begin_live(
        self, call: Call, index: int, req: RequestSpan, request: Request, notify: threading.Event | None
    ) -> _LiveStart:
        """Open rung ``index``'s live stream (its spans, its call) without waiting for a chunk."""
        start = _LiveStart(*self._live_call(call, index, req, None))
        model_span, backend = start.model_span, start.backend
        try:
            with model_span.active():
                start.handle = backend.stream(request)
                # The pump thread copies the context here, so the provider's spans nest under ours.
                start.reader = LiveReader(iter(start.handle), start.rung, pumped=True, notify=notify)
        except Exception as exc:
            start.error = exc
        return start

    def _falls_back(self, exc: BaseException) -> bool:
        """Whether a rung's error moves the request on (not control flow to pass through)."""
        return isinstance(exc, Exception) and not isinstance(exc, self.propagate)

    def _end_live(self, start: _LiveStart, attempts: list[Attempt], exc: Exception, *, lost: bool) -> None:
        """Record a raced live call that will not stream: failed before its first chunk, or the
        loser of the race (abandoned, its stream closed)."""
        if start.reader is not None:
            start.reader.close()
        start.model_span.finish(error=exc)
        if lost:
            attempt = self._abandoned_attempt(start.rung, start.backend, exc, start.t0)
            attempt.reason = "abandoned: the hedge's other call answered first"
        else:
            attempt = self._error_attempt(start.rung, start.backend, exc, start.t0, attempts, retry=False)
        if start.hedge is not None:
            attempt.details["hedge"] = start.hedge
        start.span.finish(attempt)
        attempts.append(attempt)

    def _first_deadline(self, start: _LiveStart) -> float:
        limit, _ = self._first_limit(start.rung)
        return start.t0 + limit if limit is not None else math.inf

    def _race_live(
        self, call: Call, index: int, req: RequestSpan, attempts: list[Attempt], request: Request
    ) -> _LiveStart | None:
        """Live rung ``index``, hedged on its first token: when it has sent nothing after the
        delay, the next rung's stream is opened too, and the first to send a chunk streams to
        the caller; the other is closed and recorded. None: no hedge applies (open it as usual).
        A call that fails before its first chunk leaves the race to the other."""
        delay = self._live_hedge_delay(call, index)
        if delay is None:
            return None
        hedging = self.hedging
        assert hedging is not None
        notify = threading.Event()
        first = self._begin_live(call, index, req, request, notify)
        if first.reader is None:
            return first
        waited_until = min(first.t0 + delay, self._first_deadline(first))
        while first.reader.peek() is False and (left := waited_until - time.perf_counter()) > 0:
            notify.wait(left)
            notify.clear()
        if first.reader.peek() is not False or not hedging.take():
            return first
        why = _hedge_reason(delay, time.perf_counter() - first.t0, [])
        second = self._begin_live(call, index + 1, req, request, notify)
        second.hedge = why
        if second.reader is None:
            assert second.error is not None
            if not self._falls_back(second.error):
                self._end_live(first, attempts, _HedgeLost(), lost=True)
                return second  # the driver raises its error
            self._end_live(second, attempts, second.error, lost=False)
            return first
        racing = [first, second]
        while True:
            for start, other in ((first, second), (second, first)):
                assert start.reader is not None
                seen = start.reader.peek()
                if seen is None or (seen is not False and not self._falls_back(seen)):
                    # A chunk (or the end): this call streams, the other lost. So too for an
                    # error that is not a fallback (control flow): the driver raises it.
                    self._end_live(other, attempts, _HedgeLost(), lost=True)
                    return start
                if seen is not False:  # failed before its first chunk: the other goes on
                    assert isinstance(seen, Exception)
                    self._end_live(start, attempts, seen, lost=False)
                    return other
            now = time.perf_counter()
            for start, other in ((first, second), (second, first)):
                if now >= self._first_deadline(start):
                    limit = self._first_limit(start.rung)[0] or 0.0
                    self._end_live(
                        start,
                        attempts,
                        RungTimeoutError(start.rung.name, limit, what="first token"),
                        lost=False,
                    )
                    return other
            left = min(self._first_deadline(r) for r in racing) - now
            notify.wait(max(0.0, left) if left != math.inf else None)
            notify.clear()

    def _abegin_live(self, call: Call, index: int, req: RequestSpan, request: Request) -> _LiveStart:
        """The async ``_begin_live``: the stream opened and its first chunk being read."""
        start = _LiveStart(*self._live_call(call, index, req, None))
        model_span, backend = start.model_span, start.backend
        try:
            with model_span.active():
                start.handle = backend.astream(request)
                start.chunks = aiter(start.handle)
                # The task copies the context here, so the provider's spans nest under ours.
                start.pending = asyncio.ensure_future(anext(start.chunks, _END))
        except Exception as exc:
            start.error = exc
        return start

    async def _aend_live(
        self, start: _LiveStart, attempts: list[Attempt], exc: BaseException, *, lost: bool
    ) -> None:
        """The async ``_end_live``; also records a call cut off by a cancellation (abandoned)."""
        if start.pending is not None and not start.pending.done():
            start.pending.cancel()
            with contextlib.suppress(BaseException):
                await start.pending
        close = getattr(start.chunks, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        start.model_span.finish(error=exc)
        if lost or not isinstance(exc, Exception):
            attempt = self._abandoned_attempt(start.rung, start.backend, exc, start.t0)
            if lost:
                attempt.reason = "abandoned: the hedge's other call answered first"
        else:
            attempt = self._error_attempt(start.rung, start.backend, exc, start.t0, attempts, retry=False)
        if start.hedge is not None:
            attempt.details["hedge"] = start.hedge
        start.span.finish(attempt)
        attempts.append(attempt)

    async def _arace_live(
        self, call: Call, index: int, req: RequestSpan, attempts: list[Attempt], request: Request
    ) -> _LiveStart | None:
        """The async ``_race_live``: the losing call is cancelled; a cancelled request records
        both calls as abandoned."""
        delay = self._live_hedge_delay(call, index)
        if delay is None:
            return None
        hedging = self.hedging
        assert hedging is not None
        first = self._abegin_live(call, index, req, request)
        if first.pending is None:
            return first
        running = [first]
        try:
            wait = min(delay, self._first_deadline(first) - first.t0)
            await asyncio.wait({first.pending}, timeout=max(0.0, wait))
            if first.pending.done() or not hedging.take():
                running = []
                return first
            second = self._abegin_live(call, index + 1, req, request)
            second.hedge = _hedge_reason(delay, time.perf_counter() - first.t0, [])
            if second.pending is None:
                assert second.error is not None
                if not self._falls_back(second.error):
                    running = []
                    await self._aend_live(first, attempts, _HedgeLost(), lost=True)
                    return second  # the driver raises its error
                await self._aend_live(second, attempts, second.error, lost=False)
                running = []
                return first
            running = [first, second]
            while True:
                for start, other in ((first, second), (second, first)):
                    task = start.pending
                    assert task is not None
                    if not task.done():
                        continue
                    failed = task.exception()
                    running = []
                    if failed is None or not self._falls_back(failed):
                        await self._aend_live(other, attempts, _HedgeLost(), lost=True)
                        return start
                    await self._aend_live(start, attempts, failed, lost=False)
                    return other
                now = time.perf_counter()
                for start, other in ((first, second), (second, first)):
                    if now >= self._first_deadline(start):
                        running = []
                        limit = self._first_limit(start.rung)[0] or 0.0
                        timeout = RungTimeoutError(start.rung.name, limit, what="first token")
                        await self._aend_live(start, attempts, timeout, lost=False)
                        return other
                tasks: set[asyncio.Future[Any]] = {t for r in (first, second) if (t := r.pending) is not None}
                left = min(self._first_deadline(r) for r in (first, second)) - now
                await asyncio.wait(
                    tasks, timeout=left if left != math.inf else None, return_when=asyncio.FIRST_COMPLETED
                )
        except BaseException as exc:  # cancelled while racing: every call still open is recorded
            for start in running:
                await self._aend_live(start, attempts, exc, lost=False)
            raise

    async def _aopen_live(
        self, rung: RungRuntime, backend: Backend, request: Request
    ) -> tuple[Any, Any, Any]:
        handle = backend.astream(request)
        chunks = aiter(handle)
        limit, what = self._first_limit(rung)
        return handle, chunks, await _anext_within(chunks, limit, rung, what)

    def stream(self, call: Call) -> Iterator[StreamEvent]:
        """Events for one request: the answer's chunks, then ``Finished`` with the result.

        Buffered rungs are called without streaming (their answer must be complete, and their
        logprobs present, before it can be scored); a rung whose answer cannot change the
        decision streams live. Spans are made current only between yields.
        """
        state = self._start(call)
        req, attempts = state.span, state.attempts
        live: set[int] = set()
        cont: _Continuation | None = None
        try:
            self._admit(call)
            while (index := self._next(call, attempts)) is not None:
                if not self._streams_live(index):
                    self._pause(attempts)
                    with req.active():
                        self._maybe_hedged(call, index, req, attempts)
                    continue
                rung, backend = self._rung(call, index), call.backends[index]
                self._pause(attempts)
                if not self._gate(call, rung, backend, req, attempts):
                    continue
                request = cont.request if cont is not None else call.request
                # A continuation is not raced: the emitted text is already the caller's.
                raced = self._race_live(call, index, req, attempts, request) if cont is None else None
                index, rung, backend, span, model_span, t1 = self._live_call(call, index, req, raced)
                live.add(index)
                shown: list[str | None] = []
                continuing = self._continues(index)
                received = 0
                emitted = False
                ttft: float | None = None
                reader: LiveReader | None = None
                try:
                    with model_span.active():
                        if raced is not None:
                            handle, reader = raced.handle, raced.reader
                            chunk = raced.first_chunk(self._first_limit(rung)[0])
                        else:
                            handle, reader, chunk = self._open_live(rung, backend, request)
                        assert reader is not None  # a raced call without one raised above
                        if cont is not None:
                            head, chunk = self._splice_start(cont, backend, reader, chunk, rung)
                            if head:
                                ttft, emitted = time.perf_counter() - t1, True
                                shown.append(head)
                                yield LiveText(head, index)
                    while chunk is not _END:
                        if not emitted:
                            ttft, emitted = time.perf_counter() - t1, True
                        received += 1
                        if continuing:
                            shown.append(chunk_text(backend, chunk))
                        yield LiveChunk(chunk, index)
                        with model_span.active():
                            chunk = reader.next(rung.stall_timeout, "next chunk")
                    with model_span.active():
                        output = handle.output()
                    if cont is not None:
                        output = cont.spliced(output, "".join(p for p in shown if p))
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        self._abandon(
                            span=span, attempts=attempts, rung=rung, backend=backend, exc=exc, t0=t1
                        )
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t1, attempts, retry=not emitted)
                    _note_hedge(attempt, raced)
                    if received:
                        # Its cost stays unknown (the provider bills the prompt and these, and
                        # reports neither before the end), but the record says what arrived.
                        attempt.details["chunks_received"] = received
                    span.finish(attempt)
                    attempts.append(attempt)
                    if cont is not None and not emitted:
                        # The continuation failed before adding anything (a provider that
                        # rejects prefill, say): the caller gets the stream's own error.
                        raise midstream_error(cont.rung_name, cont.error, attempts) from cont.error
                    if emitted:
                        cont = self._continuation(call, index, rung.name, exc, [*cont_prefix(cont), *shown])
                        if cont is None:
                            raise midstream_error(rung.name, exc, attempts) from exc
                        attempt.details["emitted_chars"] = len(cont.emitted)
                    continue
                except BaseException as exc:  # the consumer closed the stream, or a cancellation
                    model_span.finish(error=exc)
                    self._abandon(span=span, attempts=attempts, rung=rung, backend=backend, exc=exc, t0=t1)
                    _note_hedge(attempts[-1], raced)
                    raise
                finally:
                    if reader is not None:
                        reader.close()
                model_span.finish(output)
                self._succeeded(rung)
                if self.hedging is not None and ttft is not None:
                    # A live rung is hedged on its first token: that is the latency to learn.
                    self.hedging.observe(index, ttft)
                try:
                    with span.active():
                        attempt = self._score_sync(call, rung, backend, output, t1, span=span, ttft=ttft)
                    _note_hedge(attempt, raced)
                except BaseException as exc:
                    self._abandon(
                        span=span,
                        attempts=attempts,
                        rung=rung,
                        backend=backend,
                        exc=exc,
                        t0=t1,
                        output=output,
                    )
                    raise
                span.finish(attempt)
                attempts.append(attempt)
            result = self._conclude(attempts)
        except BaseException as exc:
            self._done(state, None, exc)
            raise
        self._done(state, result, None)
        if result.answered_by.rung not in live:
            yield WholeAnswer(result.output, result.answered_by.rung)
        yield Finished(result)

    def _abandon(
        self,
        *,
        span: RungSpan,
        attempts: list[Attempt],
        rung: RungRuntime,
        backend: Backend,
        exc: BaseException,
        t0: float,
        output: ModelOutput | None = None,
    ) -> None:
        attempt = self._abandoned_attempt(rung, backend, exc, t0, output)
        attempts.append(attempt)
        span.finish(attempt)

    async def astream(self, call: Call) -> AsyncIterator[StreamEvent]:
        """The async twin of ``stream``; the same events in the same order."""
        state = self._start(call)
        req, attempts = state.span, state.attempts
        live: set[int] = set()
        cont: _Continuation | None = None
        try:
            self._admit(call)
            while (index := self._next(call, attempts)) is not None:
                if not self._streams_live(index):
                    await self._apause(attempts)
                    with req.active():
                        await self._amaybe_hedged(call, index, req, attempts)
                    continue
                rung, backend = self._rung(call, index), call.backends[index]
                await self._apause(attempts)
                if not self._gate(call, rung, backend, req, attempts):
                    continue
                request = cont.request if cont is not None else call.request
                raced = await self._arace_live(call, index, req, attempts, request) if cont is None else None
                index, rung, backend, span, model_span, t1 = self._live_call(call, index, req, raced)
                live.add(index)
                shown: list[str | None] = []
                continuing = self._continues(index)
                received = 0
                emitted = False
                ttft: float | None = None
                chunks: Any = None
                try:
                    with model_span.active():
                        if raced is not None:
                            handle, chunks = raced.handle, raced.chunks
                            chunk = await raced.afirst_chunk(self._first_limit(rung)[0])
                        else:
                            handle, chunks, chunk = await self._aopen_live(rung, backend, request)
                        if cont is not None:
                            head, chunk = await self._asplice_start(cont, backend, chunks, chunk, rung)
                            if head:
                                ttft, emitted = time.perf_counter() - t1, True
                                shown.append(head)
                                yield LiveText(head, index)
                    while chunk is not _END:
                        if not emitted:
                            ttft, emitted = time.perf_counter() - t1, True
                        received += 1
                        if continuing:
                            shown.append(chunk_text(backend, chunk))
                        yield LiveChunk(chunk, index)
                        with model_span.active():
                            chunk = await _anext_within(chunks, rung.stall_timeout, rung, "next chunk")
                    with model_span.active():
                        output = handle.output()
                    if cont is not None:
                        output = cont.spliced(output, "".join(p for p in shown if p))
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        self._abandon(
                            span=span, attempts=attempts, rung=rung, backend=backend, exc=exc, t0=t1
                        )
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t1, attempts, retry=not emitted)
                    _note_hedge(attempt, raced)
                    if received:
                        # Its cost stays unknown (the provider bills the prompt and these, and
                        # reports neither before the end), but the record says what arrived.
                        attempt.details["chunks_received"] = received
                    span.finish(attempt)
                    attempts.append(attempt)
                    if cont is not None and not emitted:
                        # The continuation failed before adding anything (a provider that
                        # rejects prefill, say): the caller gets the stream's own error.
                        raise midstream_error(cont.rung_name, cont.error, attempts) from cont.error
                    if emitted:
                        cont = self._continuation(call, index, rung.name, exc, [*cont_prefix(cont), *shown])
                        if cont is None:
                            raise midstream_error(rung.name, exc, attempts) from exc
                        attempt.details["emitted_chars"] = len(cont.emitted)
                    continue
                except BaseException as exc:
                    model_span.finish(error=exc)
                    self._abandon(span=span, attempts=attempts, rung=rung, backend=backend, exc=exc, t0=t1)
                    _note_hedge(attempts[-1], raced)
                    raise
                model_span.finish(output)
                self._succeeded(rung)
                if self.hedging is not None and ttft is not None:
                    # A live rung is hedged on its first token: that is the latency to learn.
                    self.hedging.observe(index, ttft)
                try:
                    with span.active():
                        attempt = await self._score_async(
                            call, rung, backend, output, t1, span=span, ttft=ttft
                        )
                    _note_hedge(attempt, raced)
                except BaseException as exc:
                    self._abandon(
                        span=span,
                        attempts=attempts,
                        rung=rung,
                        backend=backend,
                        exc=exc,
                        t0=t1,
                        output=output,
                    )
                    raise
                span.finish(attempt)
                attempts.append(attempt)
            result = self._conclude(attempts)
        except BaseException as exc:
            self._done(state, None, exc)
            raise
        self._done(state, result, None)
        if result.answered_by.rung not in live:
            yield WholeAnswer(result.output, result.answered_by.rung)
        yield Finished(result)


_END: Any = object()


class _NoStreamSignal:
    """``_stream_scored``'s answer for a stream without the logprobs its scorer needs."""


_NO_STREAM_SIGNAL = _NoStreamSignal()

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly from where it stopped: do not repeat "
    "any of it, do not comment, just write the rest."
)
"""What a rung that does not take prefill is asked after the emitted text (as a user turn)."""
SPLICE_SLACK = 32
"""Characters of a continuation read beyond the emitted text's length before cutting off what it
repeats: enough to tell a continuation that restarted the answer from one that went on."""
MIN_OVERLAP = 4
"""Shorter repeats of the emitted text's end are taken as chance, not repetition."""


def splice(emitted: str, continuation: str) -> str:
    """The part of ``continuation`` that is new after ``emitted``: a continuation that restarted
    the whole answer, or repeats the end of what was emitted, is cut after the repetition."""
    if continuation.startswith(emitted):
        return continuation[len(emitted) :]
    stripped = emitted.rstrip()
    if stripped and continuation.lstrip().startswith(stripped):
        return continuation.lstrip()[len(stripped) :]
    for k in range(min(len(emitted), len(continuation)), MIN_OVERLAP - 1, -1):
        if emitted.endswith(continuation[:k]):
            return continuation[k:]
    return continuation


@dataclass(frozen=True, slots=True)
class _Continuation:
    """A live stream that broke after output reached the caller, to be continued elsewhere."""

    request: Request
    """The request with the emitted text as the assistant's turn (and the instruction)."""
    emitted: str
    rung_name: str
    error: Exception
    prefill: bool

    def spliced(self, output: ModelOutput, added: str) -> ModelOutput:
        """The continuation's output as the whole answer the caller saw."""
        return replace(output, text=self.emitted + added)


def cont_prefix(cont: _Continuation | None) -> list[str | None]:
    """What a continuation had already shown before it broke in turn."""
    return [cont.emitted] if cont is not None else []


def chunk_text(backend: Backend, native: Any) -> str | None:
    """A live chunk's text: the backend's ``chunk_text`` where it has one; str chunks as they
    are; None when it cannot be told."""
    reader = getattr(backend, "chunk_text", None)
    if reader is not None:
        text = reader(native)
        return text if isinstance(text, str) else None
    return native if isinstance(native, str) else None


class _Racer:
    """One rung attempt of a sync hedge race, on a thread of its own."""

    def __init__(
        self,
        engine: Engine,
        call: Call,
        index: int,
        req: RequestSpan,
        changed: threading.Condition,
        *,
        on_low: OnLowPrefix | None = None,
    ) -> None:
        self._engine = engine
        self._on_low = on_low
        self._call = call
        self._index = index
        self._req = req
        self._changed = changed
        self._attempts: list[Attempt] = []
        self._error: BaseException | None = None
        self._t0 = time.perf_counter()
        self.finished = False
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(
            target=ctx.run, args=(self._run,), name=f"cascade-hedge {index}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            self._engine._attempt(self._call, self._index, self._req, self._attempts, self._on_low)
        except BaseException as exc:  # handed to the request's thread
            self._error = exc
        finally:
            with self._changed:
                self.finished = True
                self._changed.notify_all()

    def snapshot(self) -> list[Attempt]:
        return list(self._attempts) if self.finished else []

    def result(self) -> list[Attempt]:
        return list(self._attempts)

    def reraise(self) -> None:
        if self.finished and self._error is not None:
            raise self._error

    def abandoned(self) -> Attempt:
        rung = self._engine._rung(self._call, self._index)
        backend = self._call.backends[self._index]
        return self._engine._abandoned_attempt(rung, backend, _HedgeLost(), self._t0)


def _note_hedge(attempt: Attempt, raced: _LiveStart | None) -> None:
    """On the attempt of a live call that a first-token hedge started: why and when."""
    if raced is not None and raced.hedge is not None:
        attempt.details["hedge"] = raced.hedge


def _hedge_reason(delay: float | None, elapsed: float, low: list[str]) -> str:
    """Why and when a hedge started, for the hedging attempt's ``details["hedge"]``: after the
    delay (the rule's value), or on a low prefix (the time it was seen, and the score)."""
    if low:
        return f"started after {elapsed:.3f} s on a low prefix: {low[0]}"
    return f"started after {delay or elapsed:.3f} s"


class _HedgeLost(Exception):
    """Stands for the losing call of a hedge race."""


@dataclass(slots=True)
class _LiveStart:
    """A live rung's stream opened by a first-token hedge race, handed to the stream driver."""

    index: int
    rung: RungRuntime
    backend: Backend
    span: RungSpan
    model_span: CallSpan
    t0: float
    handle: Any = None
    reader: LiveReader | None = None
    chunks: Any = None
    """The async iterator (``astream``)."""
    pending: asyncio.Future[Any] | None = None
    """The async race's read of the first chunk, when it is still running or holds it."""
    error: Exception | None = None
    """Opening the stream failed."""
    hedge: str | None = None
    """Set on the hedge's own call: why and when it started (its attempt's ``details``)."""

    async def afirst_chunk(self, limit: float | None) -> Any:
        """The async ``first_chunk``: the race's read of it, awaited within what is left."""
        if self.error is not None:
            raise self.error
        assert self.pending is not None
        if self.pending.done() or limit is None:
            return await self.pending
        left = max(0.0, self.t0 + limit - time.perf_counter())
        try:
            return await asyncio.wait_for(self.pending, left)
        except TimeoutError:
            raise RungTimeoutError(self.rung.name, limit, what="first token") from None

    def first_chunk(self, limit: float | None) -> Any:
        """The first chunk (or ``_END``), within what is left of the first-token limit."""
        if self.error is not None:
            raise self.error
        assert self.reader is not None
        left = None if limit is None else max(0.0, self.t0 + limit - time.perf_counter())
        return self.reader.next(left, "first token")


@dataclass(frozen=True, slots=True)
class _Aborted:
    """A scored rung's answer abandoned while it was generated (``early_abort``)."""

    partial: ModelOutput
    reason: str
    chunks: int
    score: float | None
    method: str


async def _anext_within(chunks: AsyncIterator[Any], limit: float | None, rung: RungRuntime, what: str) -> Any:
    """The next chunk (``_END`` after the last) within ``limit`` seconds (None: no limit)."""
    if limit is None:
        return await anext(chunks, _END)
    try:
        return await asyncio.wait_for(anext(chunks, _END), limit)
    except TimeoutError:
        raise RungTimeoutError(rung.name, limit, what=what) from None


class LiveReader:
    """The chunks of a sync stream, each awaited within a time limit.

    Without a stall limit only the first chunk needs one: it is read on a thread of its own
    (``call_with_timeout``) and the rest in the caller's thread, as a bare model would. With a
    stall limit a pump thread reads every chunk into a queue, so that a silent server is
    noticed after ``stall_timeout`` instead of when the HTTP client gives up; when the reader
    is closed the pump stops at its next chunk and closes the provider's stream.
    """

    __slots__ = ("_chunks", "_pump", "_rung")

    def __init__(
        self, chunks: Iterator[Any], rung: RungRuntime, *, pumped: bool, notify: threading.Event | None = None
    ) -> None:
        self._chunks = chunks
        self._rung = rung
        self._pump = ChunkPump(chunks, name=rung.name, notify=notify) if pumped or notify else None

    def peek(self) -> Literal[False] | BaseException | None:
        """``ChunkPump.peek`` (a pumped reader only): False while nothing has arrived."""
        assert self._pump is not None
        return self._pump.peek()

    def next(self, limit: float | None, what: str) -> Any:
        rung = self._rung
        if self._pump is not None:
            return self._pump.next(limit, lambda: RungTimeoutError(rung.name, limit or 0.0, what=what), _END)
        if limit is None:
            return next(self._chunks, _END)
        return call_with_timeout(
            partial(next, self._chunks, _END),
            limit,
            lambda: RungTimeoutError(rung.name, limit, what=what),
            name=rung.name,
        )

    def close(self) -> None:
        if self._pump is not None:
            self._pump.close()
            return
        close = getattr(self._chunks, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):  # a generator still running elsewhere
                close()


def _is_tool_call(request: Request, output: ModelOutput) -> bool:
    """An answer that is a tool call of the agent's (the on_tool_call rule decides it); a tool
    call that carries structured output the caller asked for is an answer like any other."""
    return bool(output.tool_calls) and not request.structured
