"""The drivers that run a ladder: sync, async, sync streaming and async streaming.

They all follow ``policy``: call the rung it names, check and score the answer, ask it for a
verdict, repeat. What differs is only how a model is called and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import AsyncRetrying, Retrying, stop_after_attempt, wait_exponential

from cascade_router import policy
from cascade_router.attempts import Attempt, Result
from cascade_router.backend import Backend
from cascade_router.errors import RungTimeoutError, ScorerError
from cascade_router.model_io import ModelOutput, Request, Usage
from cascade_router.observability.decision_log import DecisionLog, Deferred
from cascade_router.observability.drift import DriftWatch
from cascade_router.observability.shadow import ShadowSampler
from cascade_router.observability.signal_watch import SignalWatch
from cascade_router.observability.telemetry import RequestSpan, RungSpan, Telemetry
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
from cascade_router.scorers import Score, structural_problem
from cascade_router.scorers.base import as_probability
from cascade_router.scorers.validity import EMPTY_ANSWER
from cascade_router.timeouts import call_with_timeout

if TYPE_CHECKING:
    from cascade_router.ladder import RungRuntime

T = TypeVar("T")

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


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-request changes to the ladder: where to start and which thresholds to use."""

    start_at: int = 0
    """The first rung to call; the ones below it are skipped (a premium user straight to the
    strong model, say)."""
    thresholds: Mapping[int, float] = field(default_factory=dict)
    """Rung index to the threshold this request uses instead of the rung's own."""


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


StreamEvent = LiveChunk | WholeAnswer | Finished


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
        # 128 random bits as hex, like uuid4().hex, at a fraction of its cost.
        return _InFlight(
            self.telemetry.start_request(call.otel_context, call.request),
            os.urandom(16).hex(),
            time.perf_counter(),
            [],
            call.request,
            call,
        )

    def _done(self, state: _InFlight, result: Result | None, error: BaseException | None) -> None:
        """Close the request's span and queue its decision-log record; never raises."""
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

    def _error_attempt(self, rung: RungRuntime, backend: Backend, exc: Exception, t0: float) -> Attempt:
        evidence = Evidence(error=exc)
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
            exception=exc,
            # Unknown, not 0: a call that failed may still have been billed (a timeout, a
            # stream cut off after some tokens).
            cost_usd=None,
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
        if conclusion.accepted is None:
            raise exhausted_error(attempts)
        return Result(attempts, conclusion.accepted, conclusion.outcome)

    def _retryable(self, state: Any) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        return exc is not None and not isinstance(exc, self.propagate)

    def _with_retries(self, rung: RungRuntime, fn: Callable[[], T]) -> T:
        if rung.max_retries == 0:
            return fn()
        retrying = Retrying(
            stop=stop_after_attempt(rung.max_retries + 1),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=self._retryable,
            reraise=True,
        )
        return retrying(fn)

    async def _awith_retries(self, rung: RungRuntime, fn: Callable[[], Awaitable[T]]) -> T:
        if rung.max_retries == 0:
            return await fn()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(rung.max_retries + 1),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=self._retryable,
            reraise=True,
        )
        return await retrying(fn)

    @staticmethod
    def _rung_timeout(rung: RungRuntime) -> Callable[[], BaseException]:
        return lambda: RungTimeoutError(rung.name, rung.timeout or 0.0)

    # -- sync ----------------------------------------------------------------------------------

    def _invoke_rung(self, rung: RungRuntime, backend: Backend, request: Request) -> ModelOutput:
        def once() -> ModelOutput:
            return call_with_timeout(
                partial(backend.invoke, request), rung.timeout, self._rung_timeout(rung), name=rung.name
            )

        return self._with_retries(rung, once)

    def _rung(self, call: Call, index: int) -> RungRuntime:
        """Rung ``index`` as this request runs it (with its threshold override, if any)."""
        rung = self.rungs[index]
        overrides = call.overrides
        if overrides is not None and index in overrides.thresholds:
            return replace(rung, threshold=overrides.thresholds[index])
        return rung

    def _next(self, call: Call, attempts: list[Attempt]) -> int | None:
        start = call.overrides.start_at if call.overrides is not None else 0
        return policy.next_rung(attempts, len(self.rungs), start)

    def _attempt(self, call: Call, index: int, req: RequestSpan, attempts: list[Attempt]) -> None:
        """Call rung ``index`` and append its attempt (also when the call is cut off)."""
        rung, backend = self._rung(call, index), call.backends[index]
        span = req.rung(index, rung.name, rung.model or backend.model)
        attempt: Attempt | None = None
        t0 = time.perf_counter()
        try:
            with span.active():
                model_span = span.call(backend, call.request, role="rung")
                try:
                    with model_span.active():
                        output = self._invoke_rung(rung, backend, call.request)
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t0)
                    return
                except BaseException as exc:
                    model_span.finish(error=exc)
                    raise
                model_span.finish(output)
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
            with req.active():
                while (index := self._next(call, attempts)) is not None:
                    self._attempt(call, index, req, attempts)
            result = self._conclude(attempts)
        except BaseException as exc:
            self._done(state, None, exc)
            raise
        self._done(state, result, None)
        return result

    # -- async ---------------------------------------------------------------------------------

    async def _ainvoke_rung(self, rung: RungRuntime, backend: Backend, request: Request) -> ModelOutput:
        async def once() -> ModelOutput:
            if rung.timeout is None:
                return await backend.ainvoke(request)
            try:
                return await asyncio.wait_for(backend.ainvoke(request), rung.timeout)
            except TimeoutError:
                raise RungTimeoutError(rung.name, rung.timeout) from None

        return await self._awith_retries(rung, once)

    async def _aattempt(self, call: Call, index: int, req: RequestSpan, attempts: list[Attempt]) -> None:
        rung, backend = self._rung(call, index), call.backends[index]
        span = req.rung(index, rung.name, rung.model or backend.model)
        attempt: Attempt | None = None
        t0 = time.perf_counter()
        try:
            with span.active():
                model_span = span.call(backend, call.request, role="rung")
                try:
                    with model_span.active():
                        output = await self._ainvoke_rung(rung, backend, call.request)
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t0)
                    return
                except BaseException as exc:  # a cancellation: the client went away
                    model_span.finish(error=exc)
                    raise
                model_span.finish(output)
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
            with req.active():
                while (index := self._next(call, attempts)) is not None:
                    await self._aattempt(call, index, req, attempts)
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
        attempts: list[Attempt] = []
        for index in range(len(self.rungs)):
            await self._aattempt(call, index, self.telemetry.untraced, attempts)
        return attempts

    async def aprobe_rung(self, call: Call, index: int) -> Attempt:
        """One rung's attempt, as ``aprobe`` makes it (recording calls the rungs one by one)."""
        attempts: list[Attempt] = []
        await self._aattempt(call, index, self.telemetry.untraced, attempts)
        return attempts[-1]

    # -- streaming -----------------------------------------------------------------------------

    def _streams_live(self, index: int) -> bool:
        return policy.streams_live(self.rungs[index], final=self._final(index))

    def _open_live(self, rung: RungRuntime, backend: Backend, request: Request) -> tuple[Any, Any, Any]:
        """Start a live stream and wait (within the timeout) for its first chunk, retrying the
        whole opening as ``invoke`` retries a call: nothing has reached the caller yet."""

        def once() -> tuple[Any, Any, Any]:
            handle = backend.stream(request)
            chunks = iter(handle)
            first = call_with_timeout(
                partial(next, chunks, _END), rung.timeout, self._rung_timeout(rung), name=rung.name
            )
            return handle, chunks, first

        return self._with_retries(rung, once)

    async def _aopen_live(
        self, rung: RungRuntime, backend: Backend, request: Request
    ) -> tuple[Any, Any, Any]:
        async def once() -> tuple[Any, Any, Any]:
            handle = backend.astream(request)
            chunks = aiter(handle)
            if rung.timeout is None:
                return handle, chunks, await anext(chunks, _END)
            try:
                return handle, chunks, await asyncio.wait_for(anext(chunks, _END), rung.timeout)
            except TimeoutError:
                raise RungTimeoutError(rung.name, rung.timeout) from None

        return await self._awith_retries(rung, once)

    def stream(self, call: Call) -> Iterator[StreamEvent]:
        """Events for one request: the answer's chunks, then ``Finished`` with the result.

        Buffered rungs are called without streaming (their answer must be complete, and their
        logprobs present, before it can be scored); a rung whose answer cannot change the
        decision streams live. Spans are made current only between yields.
        """
        state = self._start(call)
        req, attempts = state.span, state.attempts
        live: set[int] = set()
        try:
            while (index := self._next(call, attempts)) is not None:
                if not self._streams_live(index):
                    with req.active():
                        self._attempt(call, index, req, attempts)
                    continue
                live.add(index)
                rung, backend = self._rung(call, index), call.backends[index]
                span = req.rung(index, rung.name, rung.model or backend.model)
                model_span = span.call(backend, call.request, role="rung", stream=True)
                t1 = time.perf_counter()
                emitted = False
                ttft: float | None = None
                try:
                    with model_span.active():
                        handle, chunks, chunk = self._open_live(rung, backend, call.request)
                    while chunk is not _END:
                        if not emitted:
                            ttft, emitted = time.perf_counter() - t1, True
                        yield LiveChunk(chunk, index)
                        with model_span.active():
                            chunk = next(chunks, _END)
                    with model_span.active():
                        output = handle.output()
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        self._abandon(
                            span=span, attempts=attempts, rung=rung, backend=backend, exc=exc, t0=t1
                        )
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t1)
                    span.finish(attempt)
                    attempts.append(attempt)
                    if emitted:
                        raise midstream_error(rung.name, exc, attempts) from exc
                    continue
                except BaseException as exc:  # the consumer closed the stream, or a cancellation
                    model_span.finish(error=exc)
                    self._abandon(span=span, attempts=attempts, rung=rung, backend=backend, exc=exc, t0=t1)
                    raise
                model_span.finish(output)
                try:
                    with span.active():
                        attempt = self._score_sync(call, rung, backend, output, t1, span=span, ttft=ttft)
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
        try:
            while (index := self._next(call, attempts)) is not None:
                if not self._streams_live(index):
                    with req.active():
                        await self._aattempt(call, index, req, attempts)
                    continue
                live.add(index)
                rung, backend = self._rung(call, index), call.backends[index]
                span = req.rung(index, rung.name, rung.model or backend.model)
                model_span = span.call(backend, call.request, role="rung", stream=True)
                t1 = time.perf_counter()
                emitted = False
                ttft: float | None = None
                try:
                    with model_span.active():
                        handle, chunks, chunk = await self._aopen_live(rung, backend, call.request)
                    while chunk is not _END:
                        if not emitted:
                            ttft, emitted = time.perf_counter() - t1, True
                        yield LiveChunk(chunk, index)
                        with model_span.active():
                            chunk = await anext(chunks, _END)
                    with model_span.active():
                        output = handle.output()
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        self._abandon(
                            span=span, attempts=attempts, rung=rung, backend=backend, exc=exc, t0=t1
                        )
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t1)
                    span.finish(attempt)
                    attempts.append(attempt)
                    if emitted:
                        raise midstream_error(rung.name, exc, attempts) from exc
                    continue
                except BaseException as exc:
                    model_span.finish(error=exc)
                    self._abandon(span=span, attempts=attempts, rung=rung, backend=backend, exc=exc, t0=t1)
                    raise
                model_span.finish(output)
                try:
                    with span.active():
                        attempt = await self._score_async(
                            call, rung, backend, output, t1, span=span, ttft=ttft
                        )
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


def _is_tool_call(request: Request, output: ModelOutput) -> bool:
    """An answer that is a tool call of the agent's (the on_tool_call rule decides it); a tool
    call that carries structured output the caller asked for is an answer like any other."""
    return bool(output.tool_calls) and not request.structured
