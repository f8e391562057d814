"""The OpenAI-compatible server: a Starlette app over one ``Cascade`` per configured ladder.

Starlette (not FastAPI on top of it): the server has six routes and checks its request bodies
itself, to answer in OpenAI's error format naming the field; FastAPI's dependency injection and
generated OpenAPI schema would add a layer to every request and nothing the clients use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cascade_router.attempts import Attempt, Result
from cascade_router.cascade import Cascade
from cascade_router.chat_body import ChatBody, chat_request
from cascade_router.circuit import CircuitBreakerSettings
from cascade_router.config import LadderConfig
from cascade_router.engine import Finished, LiveChunk, LiveText, WholeAnswer, chunk_text
from cascade_router.errors import (
    BudgetExceededError,
    CascadeExhaustedError,
    CascadeStreamError,
    ConfigError,
    RequestRefusedError,
)
from cascade_router.failures import classify
from cascade_router.observability.decision_log import DecisionLog, shared_log
from cascade_router.observability.redaction import redact
from cascade_router.routing.base import RungLatencies
from cascade_router.routing.budget import BudgetRule
from cascade_router.server.config import ServerConfig, load_server_config
from cascade_router.server.keys import ApiKey, KeyStore
from cascade_router.server.limits import KeyBudgetRule, key_metadata, seconds_to_next_period, take_rate
from cascade_router.server.metrics import ServerMetrics
from cascade_router.server.protocol import (
    ApiError,
    ChatRequest,
    Completion,
    chunk_json,
    completion_json,
    finish_reason,
    logprobs_json,
    messages_of,
    now,
    parse_request,
    rung_params,
    tool_calls_json,
    usage_json,
)
from cascade_router.shared_state import StateStore, open_store

log = logging.getLogger("cascade_router.server")
_tracer = trace.get_tracer("cascade_router.server")


@dataclass
class Ladder:
    name: str
    cascade: Cascade
    deadline_rule: bool


@dataclass
class ServerState:
    """What the app serves from: the ladders and the stores they share."""

    config: ServerConfig
    ladders: dict[str, Ladder]
    store: StateStore
    keys: KeyStore | None
    logs: list[DecisionLog]
    metrics: ServerMetrics
    in_flight: int = 0
    draining: bool = False
    on_shutdown: list[Any] = field(default_factory=list)
    """Called after the logs are flushed (a tracer provider's ``shutdown`` exports its spans)."""
    idle: asyncio.Event | None = field(default=None, repr=False)

    def lost_records(self) -> int:
        return sum(log.stats().lost for log in self.logs)


def latency_windows(state: ServerState) -> list[tuple[str, RungLatencies]]:
    """Every latency window the ladders learn from, each with the store key it is pooled under."""
    windows = []
    for name, ladder in state.ladders.items():
        engine = ladder.cascade.engine
        if engine.router is not None and engine.router.needs_latencies:
            windows.append((f"latency:{name}:routing", engine.router.latencies))
        if engine.hedging is not None:
            windows.append((f"latency:{name}:hedge", engine.hedging.latencies))
    return windows


def share_latencies(state: ServerState) -> None:
    """One round of pooling every ladder's latency windows in the shared store: what the
    deadline rule and hedging estimate from is then every replica's experience, not one's."""
    store = state.store
    for key, window in latency_windows(state):

        def push(rung: int, new: list[float], key: str = key, size: int = window.window) -> list[float]:
            # A day without traffic lets the pooled window expire.
            return store.push_window(f"{key}:{rung}", new, size, ttl=86_400)

        try:
            window.share(push)
        except Exception as exc:  # the store is unreachable: keep this process's own window
            log.warning("latency pooling skipped: %s", redact(str(exc)))


async def _share_latencies_forever(state: ServerState) -> None:
    every = state.config.latency_sync_s
    while True:
        await asyncio.sleep(every)
        await anyio.to_thread.run_sync(share_latencies, state)


def _with_state(config: LadderConfig, state: str | None, extra_rules: list[Any]) -> LadderConfig:
    """The ladder with the server's shared store under its breakers and budgets."""
    update: dict[str, Any] = {}
    if state is not None:
        breaker = config.circuit_breaker
        if breaker is not None and breaker.store is None:
            update["circuit_breaker"] = CircuitBreakerSettings.model_validate(
                {**breaker.model_dump(), "store": state}
            )
        rules = []
        for rule in config.routing:
            shared = rule
            if isinstance(rule, BudgetRule) and rule.store is None:
                shared = type(rule).model_validate({**rule.model_dump(), "store": state})
            rules.append(shared)
        update["routing"] = rules
    if extra_rules:
        update["routing"] = [*update.get("routing", config.routing), *extra_rules]
    return config.model_copy(update=update) if update else config


def build_state(config: ServerConfig | str | os.PathLike[str] | Mapping[str, Any]) -> ServerState:
    """Open every ladder, the shared store, the key store and the decision logs."""
    cfg = load_server_config(config if not isinstance(config, os.PathLike) else os.fspath(config))
    store = open_store(cfg.state, field="state")
    keys = KeyStore(cfg.keys, cache_s=cfg.key_cache_s) if cfg.keys else None
    default_log = shared_log(cfg.decision_log) if cfg.decision_log else None
    logs: list[DecisionLog] = [default_log] if default_log is not None else []
    ladders: dict[str, Ladder] = {}
    for name, configured in cfg.ladders.items():
        extra = [KeyBudgetRule(store=cfg.state)] if keys is not None else []
        ladder_config = _with_state(configured, cfg.state, extra)
        options: dict[str, Any] = {}
        if ladder_config.decision_log is None and default_log is not None:
            options["decision_log"] = default_log
        cascade = Cascade.from_config(ladder_config, **options)
        if cascade.decision_log is not None and cascade.decision_log not in logs:
            logs.append(cascade.decision_log)
        deadline = any(getattr(r, "kind", None) == "deadline" for r in ladder_config.routing)
        ladders[name] = Ladder(name, cascade, deadline)
    holder: list[ServerState] = []
    metrics = ServerMetrics(lambda: holder[0].lost_records() if holder else 0)
    state = ServerState(cfg, ladders, store, keys, logs, metrics)
    holder.append(state)
    return state


# -- errors -------------------------------------------------------------------------------------


def _attempt_summary(attempts: list[Attempt]) -> list[dict[str, Any]]:
    return [
        {
            "rung": a.name,
            "model": a.model,
            "decision": a.decision,
            "error_class": a.error_class,
            "reason": redact(a.reason),
        }
        for a in attempts
        if not a.shadow
    ]


def _timed_out(attempts: list[Attempt]) -> bool:
    """Every rung ran out of time: it timed out, or the deadline rule skipped it."""
    tried = [a for a in attempts if not a.shadow]
    return bool(tried) and all(
        a.error_class == "timeout" or (a.decision == "skipped" and "deadline" in a.reason) for a in tried
    )


def error_for(exc: BaseException, request_id: str) -> ApiError:
    """The HTTP error for a request that ended with ``exc``."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TimeoutError):
        return ApiError(
            504,
            f"the request took longer than the server's limit and was cancelled (request {request_id})",
            type="timeout_error",
            code="deadline_exceeded",
        )
    if isinstance(exc, CascadeExhaustedError):
        summary = _attempt_summary(exc.attempts)
        listing = "; ".join(
            f"{a['rung']}: {a['error_class'] or a['reason'] or a['decision']}".rstrip() for a in summary
        )
        cascade = {"request_id": request_id, "attempts": summary}
        if _timed_out(exc.attempts):
            return ApiError(
                504,
                f"no rung answered within the deadline ({listing})",
                type="timeout_error",
                code="deadline_exceeded",
                cascade=cascade,
            )
        tried = [a for a in exc.attempts if not a.shadow]
        rules = [a.details.get("rule") for a in tried if a.decision == "skipped"]
        if tried and len(rules) == len(tried) and all(rules):
            # No rung was called: the routing rules ruled every one out for this request (its
            # cost limit, the key's or tenant's budget, its domain...).
            budget = any(rule in ("budget", "key_budget") for rule in rules)
            return ApiError(
                429 if budget else 400,
                f"the routing rules left no rung for this request ({listing})",
                type="insufficient_quota" if budget else "invalid_request_error",
                code="insufficient_quota" if budget else "no_rung_for_request",
                cascade=cascade,
            )
        return ApiError(
            502,
            f"every rung failed ({listing})",
            type="upstream_error",
            code="all_rungs_failed",
            cascade=cascade,
        )
    if isinstance(exc, BudgetExceededError):
        return ApiError(429, redact(str(exc)), type="insufficient_quota", code="insufficient_quota")
    if isinstance(exc, RequestRefusedError):
        return ApiError(400, str(exc), code="refused_by_rule")

    if isinstance(exc, CascadeStreamError):
        return ApiError(502, redact(str(exc)), type="upstream_error", code="stream_failed")
    if isinstance(exc, ValueError) and "no message to answer" in str(exc):
        return ApiError(400, f"messages: {exc}", param="messages")
    # A rung's error that ends the request at once, without falling back (failures.py).
    kind = classify(exc)
    what = redact(f"{type(exc).__name__}: {exc}")[:500]
    if kind == "auth":
        # The provider refused the server's own credentials: not the caller's fault.
        return ApiError(
            502,
            f"a rung's provider refused its credentials ({what})",
            type="upstream_error",
            code="upstream_auth_failed",
            cascade={"request_id": request_id, "error_class": kind},
        )
    if kind in ("bad_request", "context_length", "policy"):
        code = {
            "bad_request": "upstream_rejected",
            "context_length": "context_length_exceeded",
            "policy": "content_policy",
        }[kind]
        return ApiError(
            400,
            f"a rung's provider rejected the request ({what})",
            code=code,
            cascade={"request_id": request_id, "error_class": kind},
        )
    log.error("request %s failed", request_id, exc_info=exc)
    return ApiError(
        500, f"internal error (request {request_id}); the server log has its details", type="server_error"
    )


class FastJSON(JSONResponse):
    """JSON out with orjson (several times faster than the standard library on a response)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _with_quota_wait(error: ApiError, key: ApiKey | None) -> ApiError:
    """A key's spent budget is 429 with ``Retry-After``: when its budget period starts again."""
    if error.code == "insufficient_quota" and key is not None and key.budget_usd is not None:
        error.headers.setdefault("retry-after", str(seconds_to_next_period(key.budget_per)))
    return error


def _error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return FastJSON(error.body(), status_code=error.status, headers={**error.headers, **(headers or {})})


# -- the app ------------------------------------------------------------------------------------


def _cascade_headers(result: Result, request_id: str) -> dict[str, str]:
    answered = result.answered_by
    called = [a for a in result.attempts if not a.shadow and a.decision != "skipped"]
    cost = result.cost_usd
    return {
        "x-cascade-request-id": request_id,
        "x-cascade-answered-by": answered.model or answered.name,
        "x-cascade-rung": answered.name,
        "x-cascade-escalations": str(max(0, len(called) - 1)),
        # A number, always: the known cost; when part of it is unknown (a call that failed after
        # it may have reached the provider) it is a lower bound, and the next header says so.
        "x-cascade-cost-usd": f"{cost if cost is not None else result.cost_at_least_usd:.8f}",
        "x-cascade-cost-complete": "true" if cost is not None else "false",
    }


def _sse(data: Mapping[str, Any] | str) -> bytes:
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return b"data: " + payload + b"\n\n"


class _Server:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    # -- auth and limits

    async def _key(self, request: HttpRequest) -> ApiKey | None:
        keys = self.state.keys
        if keys is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "You didn't provide an API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        hit, record = keys.cached(token)
        if not hit:
            try:
                record = await anyio.to_thread.run_sync(keys.check, token)
            except Exception as exc:
                log.error("the key store cannot be read: %s", redact(f"{type(exc).__name__}: {exc}"))
                raise ApiError(
                    503,
                    "the API key cannot be checked now (the key store is unreachable); retry later",
                    type="server_error",
                    code="key_store_unavailable",
                ) from None
        if record is None:
            raise ApiError(401, "Incorrect API key provided (or revoked)", code="invalid_api_key")
        return record

    def _ladder(self, name: str, key: ApiKey | None) -> Ladder:
        ladder = self.state.ladders.get(name)
        if ladder is None or (key is not None and not key.allows(name)):
            raise ApiError(
                404,
                f"The model '{name}' does not exist or you do not have access to it",
                param="model",
                code="model_not_found",
            )
        return ladder

    def _rate(self, key: ApiKey | None) -> None:
        if key is None or key.rpm is None:
            return
        try:
            wait = take_rate(self.state.store, key)
        except Exception as exc:  # a store that cannot be reached must not stop the service
            log.warning("rate-limit store unreachable; request let through: %s", redact(str(exc)))
            return
        if wait is not None:
            raise ApiError(
                429,
                f"Rate limit reached: {key.rpm} requests a minute for this key; retry after {wait:g} s",
                type="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": str(int(wait))},
            )

    # -- routes

    async def healthz(self, request: HttpRequest) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: HttpRequest) -> Response:
        state = self.state
        problems: dict[str, str] = {}

        def check() -> None:
            for name, ping in (
                ("state", state.store.ping),
                ("keys", state.keys.ping if state.keys else None),
            ):
                if ping is None:
                    continue
                try:
                    ping()
                except Exception as exc:
                    problems[name] = redact(f"{type(exc).__name__}: {exc}")
            for log_ in state.logs:
                try:
                    with log_.engine().connect():
                        pass
                except Exception as exc:
                    problems["decision_log"] = redact(f"{type(exc).__name__}: {exc}")

        await anyio.to_thread.run_sync(check)
        if state.draining:
            problems["server"] = "shutting down"
        body = {
            "status": "ready" if not problems else "not ready",
            "ladders": sorted(state.ladders),
            **problems,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def metrics(self, request: HttpRequest) -> Response:
        body, content_type = self.state.metrics.exposition()
        return Response(body, media_type=content_type)

    async def models(self, request: HttpRequest) -> Response:
        try:
            key = await self._key(request)
        except ApiError as error:
            return _error_response(error)
        names = [n for n in self.state.ladders if key is None or key.allows(n)]
        created = now()
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": created, "owned_by": "cascade-router"}
                    for n in names
                ],
            }
        )

    async def model(self, request: HttpRequest) -> Response:
        name = request.path_params["name"]
        try:
            key = await self._key(request)
            self._ladder(name, key)
        except ApiError as error:
            return _error_response(error)
        return JSONResponse({"id": name, "object": "model", "created": now(), "owned_by": "cascade-router"})

    async def _body(self, request: HttpRequest) -> bytes:
        limit = self.state.config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, f"the request body is larger than {limit} bytes", code="request_too_large"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def chat(self, request: HttpRequest) -> Response:
        state = self.state
        request_id = os.urandom(16).hex()
        headers = request.headers
        # Extracting costs tens of microseconds; most callers send no trace context.
        parent = propagate.extract(headers) if "traceparent" in headers or "baggage" in headers else None
        span = _tracer.start_span(
            "POST /v1/chat/completions",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "url.path": "/v1/chat/completions"},
        )
        span_context = trace.set_span_in_context(span, parent)
        ladder_name = "-"
        state.in_flight += 1
        state.metrics.in_flight.inc()
        streaming = False
        try:
            if state.draining:
                raise ApiError(
                    503, "the server is shutting down; retry on another replica", type="server_error"
                )
            key = await self._key(request)
            body = parse_request(await self._body(request))
            ladder = self._ladder(body.model, key)
            ladder_name = ladder.name
            span.set_attribute("gen_ai.request.model", ladder.name)
            span.set_attribute("cascade.request_id", request_id)
            self._rate(key)
            call = self._call(ladder, body, key, request_id, span_context)
            timeout = self._timeout(body)
            if body.stream:
                response = await self._stream(ladder, body, call, request_id, span, key=key, limit_s=timeout)
                streaming = True
                return response
            try:
                async with asyncio.timeout(timeout):
                    result = await ladder.cascade.engine.arun(call)
            except Exception as exc:
                attempts = list(getattr(exc, "attempts", []) or [])
                error = _with_quota_wait(error_for(exc, request_id), key)
                self._finish(span, ladder_name, None, attempts, error.status)
                return _error_response(error, {"x-cascade-request-id": request_id})
            done = Completion(f"chatcmpl-{request_id}", now(), result, bool(body.logprobs))
            self._finish(span, ladder_name, result, result.attempts, 200)
            return FastJSON(completion_json(done), headers=_cascade_headers(result, request_id))
        except ApiError as error:
            self._finish(span, ladder_name, None, [], error.status)
            return _error_response(error, {"x-cascade-request-id": request_id})
        except BaseException:
            # Cancelled (the server is stopping past its grace): the span still ends.
            self._finish(span, ladder_name, None, [], 499)
            raise
        finally:
            if not streaming:
                self._left()

    def _left(self) -> None:
        state = self.state
        state.in_flight -= 1
        state.metrics.in_flight.dec()
        if state.in_flight == 0 and state.idle is not None:
            state.idle.set()

    def _finish(
        self, span: Any, ladder: str, result: Result | None, attempts: list[Attempt], status: int
    ) -> None:
        try:
            self.state.metrics.record(ladder, result, attempts, status)
        except Exception:  # metrics never break a request
            log.warning("recording metrics failed", exc_info=True)
        span.set_attribute("http.response.status_code", status)
        if result is not None:
            span.set_attribute("gen_ai.response.model", result.answered_by.model or result.answered_by.name)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _timeout(self, body: ChatRequest) -> float | None:
        limit = self.state.config.request_timeout_s
        asked = body.cascade.deadline_s if body.cascade is not None else None
        if asked is not None and (limit is None or asked < limit):
            return asked
        return limit

    def _call(
        self, ladder: Ladder, body: ChatRequest, key: ApiKey | None, request_id: str, context: Any
    ) -> Any:
        # The key's items are the server's to set: a caller's own "api_key..." items are dropped.
        metadata: dict[str, Any] = {
            k: v for k, v in (body.metadata or {}).items() if not k.startswith("api_key")
        }
        if body.user is not None:
            metadata["user"] = body.user
        if key is not None:
            metadata.update(key_metadata(key))
        chat = ChatBody(messages_of(body), rung_params(body))
        options = body.cascade
        deadline = self._timeout(body) if ladder.deadline_rule else None
        try:
            return ladder.cascade.prepare(
                chat_request(chat, metadata=metadata),
                request_id=request_id,
                otel_context=context,
                start_at=options.start_at if options is not None else None,
                max_cost_usd=options.max_cost_usd if options is not None else None,
                deadline_s=deadline,
                route_metadata=metadata or None,
            )
        except ConfigError as exc:
            raise ApiError(400, f"cascade.{exc.field}: {exc.problem}", param=f"cascade.{exc.field}") from None

    async def _stream(
        self,
        ladder: Ladder,
        body: ChatRequest,
        call: Any,
        request_id: str,
        span: Any,
        *,
        key: ApiKey | None,
        limit_s: float | None,
    ) -> Response:
        cascade = ladder.cascade
        events = cascade.engine.astream(call)
        loop = asyncio.get_running_loop()
        ends = None if limit_s is None else loop.time() + limit_s

        async def next_event() -> Any:
            async with asyncio.timeout_at(ends):
                return await events.__anext__()

        try:
            first = await next_event()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await _close(events)
            if not isinstance(exc, Exception):
                raise  # cancelled: chat() ends the span and counts the request out
            attempts = list(getattr(exc, "attempts", []) or [])
            error = _with_quota_wait(error_for(exc, request_id), key)
            self._finish(span, ladder.name, None, attempts, error.status)
            self._left()
            return _error_response(error, {"x-cascade-request-id": request_id})
        completion_id, created = f"chatcmpl-{request_id}", now()
        usage_wanted = body.stream_options is not None and body.stream_options.include_usage
        want_logprobs = bool(body.logprobs)

        # What the request ended with; ``cleanup`` reports it once, whether the stream ran to its
        # end, failed, or was never read (a client gone before the first chunk).
        ended: dict[str, Any] = {"result": None, "attempts": [], "status": 499, "done": False}

        async def cleanup() -> None:
            if ended["done"]:
                return
            ended["done"] = True
            with anyio.CancelScope(shield=True):
                await _close(events)
            self._finish(span, ladder.name, ended["result"], ended["attempts"], ended["status"])
            self._left()

        async def sse() -> AsyncIterator[bytes]:
            result: Result | None = None
            event = first
            model = _model_of(cascade, event)
            sent_calls = False
            try:
                yield _sse(chunk_json(completion_id, created, model, {"role": "assistant", "content": ""}))
                while True:
                    if isinstance(event, Finished):
                        result = event.result
                        break
                    model = _model_of(cascade, event) or model
                    for delta, logprobs in _deltas(cascade, event, want_logprobs):
                        sent_calls = sent_calls or "tool_calls" in delta
                        yield _sse(chunk_json(completion_id, created, model, delta, logprobs=logprobs))
                    event = await next_event()
                output = result.output
                answered = result.answered_by.model or result.answered_by.name
                if output.tool_calls and not sent_calls:
                    # A rung that streamed live yields its text; its tool calls exist once it ends.
                    delta = {"tool_calls": tool_calls_json(output, indexed=True)}
                    yield _sse(chunk_json(completion_id, created, answered, delta))
                yield _sse(
                    chunk_json(
                        completion_id,
                        created,
                        answered,
                        {},
                        finish=finish_reason(output),
                        extra={"cascade": result.to_dict()},
                    )
                )
                if usage_wanted:
                    final = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": answered,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": usage_json(result),
                    }
                    yield _sse(final)
                ended.update(result=result, attempts=result.attempts, status=200)
                yield _sse("[DONE]")
            except Exception as exc:
                error = error_for(exc, request_id)
                ended.update(attempts=list(getattr(exc, "attempts", []) or []), status=error.status)
                yield _sse(error.body())
            finally:
                # The client went away (the response task is cancelled; status stays 499): closing
                # the cascade's stream cancels the rung's call and logs the request as abandoned.
                await cleanup()

        headers = {"x-cascade-request-id": request_id, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return _EventStream(sse(), cleanup, media_type="text/event-stream", headers=headers)


class _EventStream(StreamingResponse):
    """A streamed response that reports its request's end even when its body was never read."""

    def __init__(self, content: AsyncIterator[bytes], cleanup: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()


def _model_of(cascade: Cascade, event: Any) -> str:
    if isinstance(event, LiveChunk | LiveText | WholeAnswer):
        rung = cascade.rungs[event.rung]
        backend = cascade.backends[event.rung]
        if isinstance(event, WholeAnswer) and event.output.model:
            return event.output.model
        return backend.model or rung.name or ""
    if isinstance(event, Finished):
        answered = event.result.answered_by
        return answered.model or answered.name
    return ""


def _deltas(cascade: Cascade, event: Any, want_logprobs: bool) -> list[tuple[dict[str, Any], Any]]:
    if isinstance(event, LiveChunk):
        text = chunk_text(cascade.backends[event.rung], event.native)
        return [({"content": text}, None)] if text else []
    if isinstance(event, LiveText):
        return [({"content": event.text}, None)] if event.text else []
    if isinstance(event, WholeAnswer):
        output = event.output
        out: list[tuple[dict[str, Any], Any]] = []
        if output.text:
            out.append(({"content": output.text}, logprobs_json(output.logprobs) if want_logprobs else None))
        if output.tool_calls:
            out.append(({"tool_calls": tool_calls_json(output, indexed=True)}, None))
        return out
    return []


async def _close(events: Any) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def create_app(config: ServerConfig | str | os.PathLike[str] | Mapping[str, Any] | ServerState) -> Starlette:
    """The ASGI app serving ``config``'s ladders (a server config, a single-ladder config, a
    path to either, or a state built with ``build_state``)."""
    state = config if isinstance(config, ServerState) else build_state(config)
    server = _Server(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.idle = asyncio.Event()
        pooling = None
        if state.config.state is not None and latency_windows(state):
            pooling = asyncio.create_task(_share_latencies_forever(state))
        try:
            yield
        finally:
            if pooling is not None:
                pooling.cancel()
            await drain(state)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", server.chat, methods=["POST"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/models/{name:path}", server.model, methods=["GET"]),
            Route("/healthz", server.healthz, methods=["GET"]),
            Route("/readyz", server.readyz, methods=["GET"]),
            Route("/metrics", server.metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.cascade = state
    return app


async def drain(state: ServerState) -> None:
    """Wait (bounded) for requests in flight, then close the ladders and flush the logs."""
    state.draining = True
    grace = state.config.shutdown_grace_s
    if state.in_flight and state.idle is not None:
        state.idle.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while state.in_flight:
                    await state.idle.wait()
                    state.idle.clear()
    for ladder in state.ladders.values():
        with contextlib.suppress(Exception):
            await ladder.cascade.aclose()

    def flush() -> None:
        for log_ in state.logs:
            log_.close(timeout=max(grace, 5.0))
        if state.keys is not None:
            state.keys.close()
        for hook in state.on_shutdown:
            try:
                hook()
            except Exception:
                log.warning("a shutdown hook failed", exc_info=True)

    await anyio.to_thread.run_sync(flush)
    log.info("shut down: %d decision-log records lost", state.lost_records())


__all__ = ["ServerState", "build_state", "create_app", "drain", "error_for"]
