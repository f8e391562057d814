"""The drivers that run a ladder: sync, async, sync streaming and async streaming.

They all follow ``policy``: call the rung it names, check and score the answer, ask it for a
verdict, repeat. What differs is only how a model is called and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import AsyncRetrying, Retrying, stop_after_attempt, wait_exponential

from cascade_router import policy
from cascade_router._version import __version__
from cascade_router.attempts import Attempt, Result
from cascade_router.backend import Backend
from cascade_router.config import Rung
from cascade_router.errors import (
    CascadeExhaustedError,
    CascadeStreamError,
    RejectedAnswer,
    RungTimeoutError,
    ScorerError,
)
from cascade_router.model_io import ModelOutput, Request, Usage
from cascade_router.pricing import Price, cost_usd
from cascade_router.redaction import redact
from cascade_router.scorers import Score, Scorer, structural_problem
from cascade_router.telemetry import RequestSpan, RungSpan, Telemetry
from cascade_router.timeouts import call_with_timeout

if TYPE_CHECKING:
    from cascade_router.decision_log import DecisionLog


@dataclass(frozen=True, slots=True)
class RungRuntime:
    """A rung as the engine runs it: its rule plus the names its adapter resolved."""

    index: int
    name: str
    provider: str | None
    model: str | None
    scorer: Scorer | None
    threshold: float | None
    timeout: float | None
    price: Price | None
    on_missing: policy.OnMissing
    on_tool_call: policy.OnToolCall
    validate_output: bool
    max_retries: int

    @property
    def has_scorer(self) -> bool:
        return self.scorer is not None

    @classmethod
    def from_rung(
        cls, index: int, rung: Rung, *, name: str, provider: str | None, model: str | None
    ) -> RungRuntime:
        return cls(
            index=index,
            name=name,
            provider=rung.provider or provider,
            model=model,
            scorer=rung.scorer,
            threshold=rung.threshold,
            timeout=rung.timeout,
            price=rung.price,
            on_missing=rung.on_missing,
            on_tool_call=rung.on_tool_call,
            validate_output=rung.validate_output,
            max_retries=rung.max_retries,
        )


def runtimes_for(
    rungs: Sequence[Rung], identities: Sequence[tuple[str | None, str | None]], fallback: Sequence[str]
) -> list[RungRuntime]:
    """Runtimes for a ladder whose models an adapter resolved: ``identities`` are each model's
    (provider, model name), ``fallback`` a name for a rung with neither a name nor a model name.
    Repeated names get ``#index`` so that every rung's name is unique in results and traces."""
    names: list[str] = []
    for i, rung in enumerate(rungs):
        name = rung.name or identities[i][1] or fallback[i]
        names.append(name if name not in names else f"{name}#{i}")
    return [
        RungRuntime.from_rung(i, rung, name=names[i], provider=identities[i][0], model=identities[i][1])
        for i, rung in enumerate(rungs)
    ]


def model_key(value: Any) -> Any:
    """Dictionary key for a model reference: strings by value, objects by identity (models are
    often unhashable pydantic objects)."""
    return value if isinstance(value, str) else id(value)


JudgeT = TypeVar("JudgeT")


def resolve_judges(
    rungs: Sequence[Rung],
    resolve: Callable[[Any, str], JudgeT],
    identity: Callable[[JudgeT], tuple[str | None, str | None]],
) -> dict[Any, tuple[JudgeT, str | None, str | None]]:
    """Every judge model the rungs' scorers name, resolved once by the adapter's ``resolve(ref,
    field)`` and keyed by ``model_key``: (model, provider, model name)."""
    judges: dict[Any, tuple[JudgeT, str | None, str | None]] = {}
    for i, rung in enumerate(rungs):
        for ref in rung.scorer.models() if rung.scorer is not None else []:
            judge = resolve(ref, f"rungs[{i}].scorer.judge")
            judges[model_key(ref)] = (judge, *identity(judge))
    return judges


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


@dataclass(frozen=True, slots=True)
class _InFlight:
    """One request while the engine runs it."""

    span: RequestSpan
    request_id: str
    t0: float
    attempts: list[Attempt]
    request: Request | None = None


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


def _is_probability(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not math.isnan(value) and 0.0 <= value <= 1.0


def _error_text(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


class Engine:
    """Runs requests through a ladder. Stateless between requests; safe to share."""

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
        self.ladder = [
            {
                "rung": r.index,
                "name": r.name,
                "provider": r.provider,
                "model": r.model,
                "threshold": r.threshold,
                "scorer": _scorer_config(r.scorer),
                "timeout": r.timeout,
            }
            for r in self.rungs
        ]
        """The ladder as recorded in the decision log: names, models, rules; never a secret."""
        self.config_hash = hashlib.sha256(
            json.dumps(
                {
                    "name": name,
                    "ladder": self.ladder,
                    "accept_last": accept_last,
                    "on_exhausted": on_exhausted,
                },
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()[:16]
        self.telemetry = telemetry or Telemetry(name, [r.name for r in self.rungs])
        self.decision_log = decision_log

    # -- per request ---------------------------------------------------------------------------

    def _start(self, call: Call) -> _InFlight:
        # 128 random bits as hex, like uuid4().hex, at a fraction of its cost.
        return _InFlight(
            self.telemetry.start_request(call.otel_context),
            os.urandom(16).hex(),
            time.perf_counter(),
            [],
            call.request,
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
        try:
            log.record(self._record(state, result, error))
        except Exception as exc:  # a record that cannot even be built is counted as lost
            from cascade_router.telemetry import _report

            _report("decision log record", exc)

    def _content(self, state: _InFlight) -> dict[str, Any]:
        """The request and each attempt's answer, for a log that stores content."""
        request = state.request
        return {
            "request": [{"role": m.role, "content": m.content} for m in request.messages] if request else [],
            "answers": [a.output.text if a.output is not None else None for a in state.attempts],
        }

    def _record(self, state: _InFlight, result: Result | None, error: BaseException | None) -> dict[str, Any]:
        attempts = state.attempts
        usage = Usage()
        cost: float | None = 0.0
        for a in attempts:
            usage = usage + (a.usage or Usage()) + a.scorer_usage
            c = a.total_cost_usd
            cost = None if c is None or cost is None else cost + c
        answered = result.answered_by if result is not None else None
        if result is not None:
            outcome: str = result.outcome
        elif isinstance(error, CascadeExhaustedError):
            outcome = "exhausted"
        else:
            outcome = "error"
        return {
            "request_id": state.request_id,
            "trace_id": state.span.trace_id,
            "created_at": datetime.now(UTC),
            "cascade": self.name,
            "config_hash": self.config_hash,
            "package_version": __version__,
            "outcome": outcome,
            "answered_rung": answered.rung if answered else None,
            "answered_name": answered.name if answered else None,
            "answered_model": answered.model if answered else None,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_usd": cost,
            "latency_s": time.perf_counter() - state.t0,
            "error": _error_text(error)[:2000] if error is not None and result is None else None,
            "ladder": self.ladder,
            "attempts": [a.to_dict() for a in attempts],
            "content": self._content(state)
            if self.decision_log is not None and self.decision_log.store_content
            else None,
        }

    # -- pieces shared by every driver -------------------------------------------------------

    def _final(self, index: int) -> bool:
        return policy.is_final(index, len(self.rungs), self.accept_last)

    def _error_attempt(self, rung: RungRuntime, backend: Backend, exc: Exception, t0: float) -> Attempt:
        inputs: dict[str, Any] = {"error": exc}
        verdict = policy.decide(rung, final=self._final(rung.index), **inputs)
        return Attempt(
            rung=rung.index,
            name=rung.name,
            provider=rung.provider,
            model=rung.model or backend.model,
            decision=verdict.decision,
            reason=verdict.reason,
            threshold=rung.threshold,
            error=_error_text(exc),
            exception=exc,
            latency_s=time.perf_counter() - t0,
            inputs=inputs,
        )

    def _pre_check(self, rung: RungRuntime, request: Request, output: ModelOutput) -> tuple[str | None, bool]:
        """(validity problem, whether to run the scorer)."""
        invalid = structural_problem(request, output) if rung.validate_output else None
        if invalid is not None:
            return invalid, False
        return None, policy.should_score(rung, is_tool_call=bool(output.tool_calls))

    def _finish(
        self,
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
            scorer_error = _error_text(scorer_exc)
        elif score is not None and score.value is not None:
            value = score.value
            if not _is_probability(value):
                scorer_error = _error_text(
                    ScorerError(f"{score.method} scorer returned {value!r}, not a number in [0, 1]")
                )
                value = None
        inputs: dict[str, Any] = {
            "invalid": invalid,
            "is_tool_call": bool(output.tool_calls),
            "score": value,
            "missing": score.missing if score is not None else None,
            "scorer_error": scorer_error,
        }
        verdict = policy.decide(rung, final=self._final(rung.index), **inputs)
        model = output.model or rung.model or backend.model
        method = "validity" if invalid is not None else (score.method if score is not None else None)
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
            details=dict(score.details) if score is not None else ({"problem": invalid} if invalid else {}),
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
            inputs=inputs,
        )

    def _conclude(self, attempts: list[Attempt]) -> Result:
        conclusion = policy.conclude(attempts, self.on_exhausted)
        if conclusion.accepted is None:
            raise exhausted_error(attempts)
        return Result(attempts, conclusion.accepted, conclusion.outcome)

    def _retrying(self, rung: RungRuntime) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(rung.max_retries + 1),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=self._retryable,
            reraise=True,
        )

    def _retryable(self, state: Any) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        return exc is not None and not isinstance(exc, self.propagate)

    # -- sync ----------------------------------------------------------------------------------

    def _invoke_rung(self, rung: RungRuntime, backend: Backend, request: Request) -> ModelOutput:
        def once() -> ModelOutput:
            return call_with_timeout(lambda: backend.invoke(request), rung.timeout, rung.name)

        if rung.max_retries == 0:
            return once()
        return self._retrying(rung)(once)

    def _attempt(self, call: Call, index: int, req: RequestSpan) -> Attempt:
        rung, backend = self.rungs[index], call.backends[index]
        span = req.rung(index, rung.name, rung.model or backend.model)
        attempt: Attempt | None = None
        try:
            with span.active():
                t0 = time.perf_counter()
                model_span = span.call(backend, call.request, role="rung")
                try:
                    with model_span.active():
                        output = self._invoke_rung(rung, backend, call.request)
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t0)
                    return attempt
                model_span.finish(output)
                attempt = self._score_sync(call, rung, backend, output, t0, span=span)
                return attempt
        finally:
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
            assert rung.scorer is not None
            scoring = _Scoring(call, rung.index, span)
            try:
                score = rung.scorer.score(call.request, output, scoring)
            except self.propagate:
                raise
            except Exception as exc:
                scorer_exc = exc
        return self._finish(
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
                while (index := policy.next_rung(attempts, len(self.rungs))) is not None:
                    attempts.append(self._attempt(call, index, req))
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

        if rung.max_retries == 0:
            return await once()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(rung.max_retries + 1),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=self._retryable,
            reraise=True,
        )
        return await retrying(once)

    async def _aattempt(self, call: Call, index: int, req: RequestSpan) -> Attempt:
        rung, backend = self.rungs[index], call.backends[index]
        span = req.rung(index, rung.name, rung.model or backend.model)
        attempt: Attempt | None = None
        try:
            with span.active():
                t0 = time.perf_counter()
                model_span = span.call(backend, call.request, role="rung")
                try:
                    with model_span.active():
                        output = await self._ainvoke_rung(rung, backend, call.request)
                except Exception as exc:
                    model_span.finish(error=exc)
                    if isinstance(exc, self.propagate):
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t0)
                    return attempt
                model_span.finish(output)
                attempt = await self._score_async(call, rung, backend, output, t0, span=span)
                return attempt
        finally:
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
                score = await rung.scorer.ascore(call.request, output, scoring)
            except self.propagate:
                raise
            except Exception as exc:
                scorer_exc = exc
        return self._finish(
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
                while (index := policy.next_rung(attempts, len(self.rungs))) is not None:
                    attempts.append(await self._aattempt(call, index, req))
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
        req = self.telemetry._no_request
        return [await self._aattempt(call, index, req) for index in range(len(self.rungs))]

    # -- streaming -----------------------------------------------------------------------------

    def _streams_live(self, index: int) -> bool:
        return policy.streams_live(self.rungs[index], final=self._final(index))

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
            while (index := policy.next_rung(attempts, len(self.rungs))) is not None:
                if not self._streams_live(index):
                    with req.active():
                        attempts.append(self._attempt(call, index, req))
                    continue
                live.add(index)
                rung, backend = self.rungs[index], call.backends[index]
                span = req.rung(index, rung.name, rung.model or backend.model)
                model_span = span.call(backend, call.request, role="rung", stream=True)
                t1 = time.perf_counter()
                emitted = False
                ttft: float | None = None
                try:
                    with model_span.active():
                        handle = backend.stream(call.request)
                        chunks = iter(handle)
                        chunk = call_with_timeout(partial(next, chunks, _END), rung.timeout, rung.name)
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
                        span.finish(None)
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t1)
                    span.finish(attempt)
                    attempts.append(attempt)
                    if emitted:
                        raise _midstream_error(rung, exc, attempts) from exc
                    continue
                except BaseException:  # the consumer closed the stream, or a cancellation
                    model_span.finish()
                    span.finish(None)
                    raise
                model_span.finish(output)
                with span.active():
                    attempt = self._score_sync(call, rung, backend, output, t1, span=span, ttft=ttft)
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

    async def astream(self, call: Call) -> AsyncIterator[StreamEvent]:
        """The async twin of ``stream``; the same events in the same order."""
        state = self._start(call)
        req, attempts = state.span, state.attempts
        live: set[int] = set()
        try:
            while (index := policy.next_rung(attempts, len(self.rungs))) is not None:
                if not self._streams_live(index):
                    with req.active():
                        attempts.append(await self._aattempt(call, index, req))
                    continue
                live.add(index)
                rung, backend = self.rungs[index], call.backends[index]
                span = req.rung(index, rung.name, rung.model or backend.model)
                model_span = span.call(backend, call.request, role="rung", stream=True)
                t1 = time.perf_counter()
                emitted = False
                ttft: float | None = None
                try:
                    with model_span.active():
                        handle = backend.astream(call.request)
                        chunks = aiter(handle)
                        try:
                            if rung.timeout is None:
                                chunk = await anext(chunks, _END)
                            else:
                                chunk = await asyncio.wait_for(anext(chunks, _END), rung.timeout)
                        except TimeoutError:
                            raise RungTimeoutError(rung.name, rung.timeout or 0.0) from None
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
                        span.finish(None)
                        raise
                    attempt = self._error_attempt(rung, backend, exc, t1)
                    span.finish(attempt)
                    attempts.append(attempt)
                    if emitted:
                        raise _midstream_error(rung, exc, attempts) from exc
                    continue
                except BaseException:
                    model_span.finish()
                    span.finish(None)
                    raise
                model_span.finish(output)
                with span.active():
                    attempt = await self._score_async(call, rung, backend, output, t1, span=span, ttft=ttft)
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


def _scorer_config(scorer: Scorer | None) -> dict[str, Any] | None:
    """A scorer's settings for the log and the config hash: plain values only, models by name."""
    if scorer is None:
        return None
    out: dict[str, Any] = {"kind": getattr(scorer, "kind", type(scorer).__name__)}
    for key, value in scorer:
        if key == "kind":
            continue
        if value is None or isinstance(value, str | int | float | bool):
            out[key] = value
        elif isinstance(value, Scorer):
            out[key] = _scorer_config(value)
        elif isinstance(value, list | tuple) and all(isinstance(v, Scorer) for v in value):
            out[key] = [_scorer_config(v) for v in value]
        else:
            name = getattr(value, "model_name", None) or getattr(value, "model", None)
            out[key] = f"{type(value).__name__}({name})" if isinstance(name, str) else type(value).__name__
    return out


_END: Any = object()


def _midstream_error(rung: RungRuntime, exc: Exception, attempts: list[Attempt]) -> CascadeStreamError:
    return CascadeStreamError(
        f"rung {rung.name!r} failed after part of its answer was streamed; the answer is "
        f"incomplete and was not retried on another rung: {_error_text(exc)}",
        attempts=attempts,
    )


def exhausted_error(attempts: list[Attempt]) -> CascadeExhaustedError:
    """One exception holding every attempt's error; its message lists rung, model and error."""
    exceptions: list[Exception] = []
    lines = []
    for a in attempts:
        if isinstance(a.exception, Exception) and a.decision == "error":
            exc: Exception = a.exception
        else:
            exc = RejectedAnswer(f"rung {a.rung} {a.name!r} ({a.model}): {a.reason}")
            if a.exception is not None:
                exc.__cause__ = a.exception
        exceptions.append(exc)
        what = a.error if a.decision == "error" else a.reason
        lines.append(f"rung {a.rung} {a.name!r} ({a.model}): {what}")
    message = "no rung gave an acceptable answer: " + "; ".join(lines)
    return CascadeExhaustedError(message, exceptions, attempts)
