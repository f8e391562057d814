"""OpenTelemetry spans for every request, following ``docs/tracing.md``:

```
invoke_workflow {cascade}        INTERNAL  one per request          openinference.span.kind=CHAIN
├─ cascade.rung 0 {model}        INTERNAL  open until its decision  cascade.confidence, decision, reason
│  ├─ chat {model}               CLIENT    the model call           gen_ai.*
│  └─ chat {judge model}         CLIENT    cascade.role=judge
└─ cascade.rung 1 {model}
   └─ chat {model}
```

Telemetry never breaks a request: every call into this module is guarded, and a failure is
logged once (per place) and otherwise ignored. Spans are made current only around code that
does not yield, so that streaming generators never leave a context attached across a ``yield``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from cascade_router._version import __version__
from cascade_router.model_io import ModelOutput, Request
from cascade_router.observability import semconv as sc

if TYPE_CHECKING:
    from cascade_router.attempts import Attempt, Result
    from cascade_router.backend import Backend

_log = logging.getLogger("cascade_router.telemetry")

GENAI_INFERENCE_KEY = "opentelemetry.genai.client.inference.context"
"""Context key of opentelemetry-util-genai's inference invocations (``CLIENT_INFERENCE_CONTEXT_KEY``)."""
_reported: set[str] = set()
_reported_lock = threading.Lock()


def report_failure(where: str, exc: BaseException) -> None:
    """Log a telemetry failure once per place; the request goes on."""
    with _reported_lock:
        if where in _reported:
            return
        _reported.add(where)
    _log.warning("cascade-router telemetry failed in %s; requests are unaffected: %r", where, exc)


def _capture_mode() -> str | None:
    value = os.environ.get(sc.CAPTURE_CONTENT_ENV)
    if not value:
        return None
    value = value.strip().upper()
    if value in ("SPAN_ONLY", "TRUE"):
        return "SPAN_ONLY"
    if value in ("SPAN_AND_EVENT", "EVENT_ONLY"):
        return "SPAN_AND_EVENT"
    return None


def _messages_json(request: Request) -> str:
    return json.dumps(
        [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in request.messages]
    )


def _output_json(output: ModelOutput) -> str:
    parts: list[dict[str, Any]] = []
    if output.text:
        parts.append({"type": "text", "content": output.text})
    parts.extend(
        {"type": "tool_call", "name": c.name, "arguments": dict(c.args), "id": c.id}
        for c in output.tool_calls
    )
    return json.dumps(
        [{"role": "assistant", "parts": parts, "finish_reason": output.finish_reason}], default=str
    )


def _input_summary(request: Request | None) -> str:
    """What trace lists show as a request's input: its last user turn when content capture is
    on, otherwise only how long the conversation is (prompts are not recorded by default)."""
    if request is None:
        return ""
    if _capture_mode() is not None:
        turns = [m.content for m in request.messages if m.role == "user"]
        return turns[-1] if turns else ""
    native = request.native
    count = len(native) if isinstance(native, list | tuple) else len(request.messages)
    return f"{count} message{'s' if count != 1 else ''} (content not recorded)"


class _Active:
    """Makes a context current for a ``with`` block (never across a ``yield``)."""

    __slots__ = ("_ctx", "_token")

    def __init__(self, ctx: otel_context.Context | None) -> None:
        self._ctx = ctx
        self._token: object | None = None

    def __enter__(self) -> None:
        if self._ctx is not None:
            try:
                self._token = otel_context.attach(self._ctx)
            except Exception as exc:
                report_failure("attach", exc)

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            try:
                otel_context.detach(self._token)  # type: ignore[arg-type]
            except Exception as exc:
                report_failure("detach", exc)
            self._token = None


_INACTIVE = _Active(None)


class CallSpan:
    """``chat {model}``: one model call, by a rung or by its judge."""

    __slots__ = ("_span", "ctx")

    def __init__(self, span: trace.Span | None, ctx: otel_context.Context | None) -> None:
        self._span = span
        self.ctx = ctx

    def active(self) -> _Active:
        return _Active(self.ctx) if self.ctx is not None else _INACTIVE

    def finish(self, output: ModelOutput | None = None, error: BaseException | None = None) -> None:
        span = self._span
        if span is None:
            return
        try:
            if span.is_recording():
                if output is not None:
                    attrs: dict[str, Any] = {}
                    if output.model:
                        attrs[sc.RESPONSE_MODEL] = output.model
                    if output.response_id:
                        attrs[sc.RESPONSE_ID] = output.response_id
                    if output.finish_reason:
                        attrs[sc.RESPONSE_FINISH_REASONS] = [output.finish_reason]
                    if output.usage is not None:
                        attrs[sc.USAGE_INPUT] = output.usage.input_tokens
                        attrs[sc.USAGE_OUTPUT] = output.usage.output_tokens
                        attrs[sc.OI_PROMPT_TOKENS] = output.usage.input_tokens
                        attrs[sc.OI_COMPLETION_TOKENS] = output.usage.output_tokens
                        attrs[sc.OI_TOTAL_TOKENS] = output.usage.total_tokens
                    mode = _capture_mode()
                    if mode is not None:
                        attrs[sc.OUTPUT_MESSAGES] = _output_json(output)
                    span.set_attributes(attrs)
                if error is not None:
                    span.set_attribute(sc.ERROR_TYPE, type(error).__qualname__)
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()
        except Exception as exc:
            report_failure("CallSpan.finish", exc)


_NO_CALL = CallSpan(None, None)


class RungSpan:
    """``cascade.rung {i} {model}``: open until the rung's decision is made."""

    __slots__ = ("_span", "_tel", "ctx")

    def __init__(self, tel: Telemetry, span: trace.Span | None, ctx: otel_context.Context | None) -> None:
        self._tel = tel
        self._span = span
        self.ctx = ctx

    def active(self) -> _Active:
        return _Active(self.ctx) if self.ctx is not None else _INACTIVE

    def call(self, backend: Backend, request: Request, *, role: str, stream: bool = False) -> CallSpan:
        if self._span is None or not self._tel.inference_spans:
            return _NO_CALL
        try:
            model = backend.model or "unknown"
            attrs: dict[str, Any] = {
                sc.OPERATION: "chat",
                sc.REQUEST_MODEL: model,
                sc.OI_SPAN_KIND: "LLM",
                sc.OI_MODEL_NAME: model,
                sc.ROLE: role,
            }
            if backend.provider:
                attrs[sc.PROVIDER] = backend.provider
            if stream:
                attrs[sc.REQUEST_STREAM] = True
            options: Mapping[str, Any] = backend.request_options
            if "temperature" in options:
                attrs[sc.REQUEST_TEMPERATURE] = options["temperature"]
            if "max_tokens" in options:
                attrs[sc.REQUEST_MAX_TOKENS] = options["max_tokens"]
            mode = _capture_mode()
            if mode is not None:
                attrs[sc.INPUT_MESSAGES] = _messages_json(request)
            span = self._tel.tracer.start_span(
                f"chat {model}", context=self.ctx, kind=SpanKind.CLIENT, attributes=attrs
            )
            if mode == "SPAN_AND_EVENT":
                span.add_event(sc.INFERENCE_DETAILS_EVENT, {sc.INPUT_MESSAGES: attrs[sc.INPUT_MESSAGES]})
            return CallSpan(span, trace.set_span_in_context(span, self.ctx))
        except Exception as exc:
            report_failure("RungSpan.call", exc)
            return _NO_CALL

    def finish(self, attempt: Attempt | None) -> None:
        """End the span with the attempt's decision; None when the call was abandoned (the
        stream's consumer stopped, or control flow such as an agent interrupt passed through)."""
        span = self._span
        if span is None:
            return
        try:
            if attempt is not None and span.is_recording():
                attrs: dict[str, Any] = {
                    sc.DECISION: attempt.decision,
                    sc.DECISION_REASON: attempt.reason,
                }
                if attempt.model:
                    attrs[sc.REQUEST_MODEL] = attempt.model
                if attempt.score is not None:
                    attrs[sc.CONFIDENCE] = attempt.score
                if attempt.method is not None:
                    attrs[sc.CONFIDENCE_METHOD] = attempt.method
                if attempt.threshold is not None:
                    attrs[sc.THRESHOLD] = attempt.threshold
                cost = attempt.total_cost_usd
                if cost is not None:
                    attrs[sc.COST] = cost
                span.set_attributes(attrs)
                if attempt.score is not None or attempt.method is not None:
                    event: dict[str, Any] = {
                        sc.EVALUATION_NAME: attempt.method or "none",
                        sc.EVALUATION_LABEL: attempt.decision,
                    }
                    if attempt.score is not None:
                        event[sc.EVALUATION_SCORE] = attempt.score
                    span.add_event(sc.EVALUATION_EVENT, event)
                drift = attempt.details.get("drift")
                if isinstance(drift, dict):
                    span.add_event(sc.DRIFT_EVENT, drift)
                if attempt.decision == "skipped":
                    rule = attempt.details.get("rule")
                    if rule is not None:
                        span.set_attribute(sc.ROUTING_RULE, str(rule))
                    else:
                        span.set_attribute(sc.CIRCUIT, "open")
                if attempt.decision == "error":
                    exc = attempt.exception
                    span.set_attribute(sc.ERROR_TYPE, type(exc).__qualname__ if exc else "error")
                    if attempt.error_class is not None:
                        span.set_attribute(sc.ERROR_CLASS, attempt.error_class)
                    span.set_status(Status(StatusCode.ERROR, attempt.error or "error"))
            span.end()
        except Exception as exc:
            report_failure("RungSpan.finish", exc)


class RequestSpan:
    """``invoke_workflow {cascade}``: one request, from the first rung call to the answer."""

    __slots__ = ("_span", "_tel", "ctx", "trace_id")

    def __init__(
        self, tel: Telemetry, span: trace.Span | None, ctx: otel_context.Context | None, trace_id: str | None
    ) -> None:
        self._tel = tel
        self._span = span
        self.ctx = ctx
        self.trace_id = trace_id
        """Hex trace id of a recorded trace (for the decision log and response metadata)."""

    def active(self) -> _Active:
        return _Active(self.ctx) if self.ctx is not None else _INACTIVE

    def rung(self, index: int, name: str, model: str | None) -> RungSpan:
        if self._span is None:
            return self._tel.no_rung
        try:
            attrs: dict[str, Any] = {sc.RUNG_INDEX: index, sc.RUNG_NAME: name, sc.OI_SPAN_KIND: "CHAIN"}
            if model:
                attrs[sc.REQUEST_MODEL] = model
            # Named by the rung and its model: two rungs on one model (a short and a long
            # budget, say) must not look alike in a trace tree.
            title = name if not model or model == name else f"{name} ({model})"
            span = self._tel.tracer.start_span(
                f"cascade.rung {index} {title}", context=self.ctx, attributes=attrs
            )
            return RungSpan(self._tel, span, trace.set_span_in_context(span, self.ctx))
        except Exception as exc:
            report_failure("RequestSpan.rung", exc)
            return self._tel.no_rung

    def finish(
        self,
        request_id: str,
        attempts: list[Attempt],
        result: Result | None = None,
        error: BaseException | None = None,
    ) -> None:
        span = self._span
        if span is None:
            return
        try:
            if span.is_recording():
                attrs: dict[str, Any] = {sc.REQUEST_ID: request_id, sc.ATTEMPT_COUNT: len(attempts)}
                inp = out = 0
                for a in attempts:
                    if a.usage is not None:
                        inp += a.usage.input_tokens
                        out += a.usage.output_tokens
                    inp += a.scorer_usage.input_tokens
                    out += a.scorer_usage.output_tokens
                attrs[sc.CASCADE_INPUT] = inp
                attrs[sc.CASCADE_OUTPUT] = out
                if result is not None:
                    answered = result.answered_by
                    attrs[sc.OUTCOME] = "accepted" if result.outcome == "accepted" else result.outcome
                    attrs[sc.ANSWERED_RUNG] = answered.rung
                    attrs[sc.ANSWERED_NAME] = answered.name
                    # What trace lists show for a request: the answer itself only when content
                    # capture is on, otherwise who answered and how.
                    if _capture_mode() is not None:
                        attrs[sc.OI_OUTPUT_VALUE] = result.output.text
                    else:
                        n = len(attempts)
                        attrs[sc.OI_OUTPUT_VALUE] = (
                            f"answered by {answered.name} ({answered.model or 'unknown model'}), rung "
                            f"{answered.rung}, after {n} attempt{'s' if n != 1 else ''}"
                            " (content not recorded)"
                        )
                    attrs[sc.OI_OUTPUT_MIME] = "text/plain"
                    if answered.model:
                        attrs[sc.ANSWERED_MODEL] = answered.model
                    if answered.provider:
                        attrs[sc.ANSWERED_PROVIDER] = answered.provider
                    if answered.score is not None:
                        attrs[sc.FINAL_CONFIDENCE] = answered.score
                    cost = result.cost_usd
                    if cost is not None:
                        attrs[sc.COST] = cost
                else:
                    from cascade_router.errors import CascadeExhaustedError

                    if isinstance(error, CascadeExhaustedError):
                        attrs[sc.OUTCOME] = "exhausted"
                    elif error is not None and not isinstance(error, Exception):
                        attrs[sc.OUTCOME] = "abandoned"  # cancelled, or the stream was closed
                    else:
                        attrs[sc.OUTCOME] = "error"
                    if error is not None:
                        attrs[sc.ERROR_TYPE] = type(error).__qualname__
                        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                span.set_attributes(attrs)
            span.end()
        except Exception as exc:
            report_failure("RequestSpan.finish", exc)


class Telemetry:
    """Creates the spans of one cascade. ``enabled=False`` makes every span a no-op."""

    def __init__(
        self,
        name: str,
        ladder: list[str],
        *,
        enabled: bool = True,
        inference_spans: bool = True,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.name = name
        self.ladder = list(ladder)
        self.enabled = enabled
        self.inference_spans = inference_spans
        """Off where a provider instrumentation already emits a span per model call: two LLM
        spans for one call would double-count tokens and cost in tracing backends."""
        self.tracer = trace.get_tracer("cascade_router", __version__, tracer_provider=tracer_provider)
        self._explicit_provider = tracer_provider is not None
        self.no_rung = RungSpan(self, None, None)
        self.untraced = RequestSpan(self, None, None, None)
        """A request that records nothing (offline probes, tracing off)."""

    def start_request(
        self, parent: otel_context.Context | None = None, request: Request | None = None
    ) -> RequestSpan:
        if not self.enabled:
            return self.untraced
        if not self._explicit_provider and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            # No SDK configured in this process: every span would be a no-op. The check is
            # repeated per request because an application may configure tracing later.
            return self.untraced
        try:
            if parent is None:
                parent = otel_context.get_current()
            if otel_context.get_value(GENAI_INFERENCE_KEY, parent) is not None:
                # The official LangChain instrumentation marks its inference span's context with
                # this key, and inference calls nested under it are treated as part of it. The
                # rungs' calls are inference calls in their own right: clear the mark.
                parent = otel_context.set_value(GENAI_INFERENCE_KEY, None, parent)
            span = self.tracer.start_span(
                f"invoke_workflow {self.name}",
                context=parent,
                attributes={
                    sc.OPERATION: "invoke_workflow",
                    sc.WORKFLOW_NAME: self.name,
                    sc.LADDER: self.ladder,
                    sc.OI_SPAN_KIND: "CHAIN",
                    sc.OI_INPUT_VALUE: _input_summary(request),
                    sc.OI_INPUT_MIME: "text/plain",
                },
            )
            span_ctx = span.get_span_context()
            if not span_ctx.is_valid:
                # No SDK behind the API (no tracer provider set): nothing will record, so skip
                # the child spans and the context switches altogether.
                return RequestSpan(self, None, None, None)
            return RequestSpan(
                self, span, trace.set_span_in_context(span, parent), format(span_ctx.trace_id, "032x")
            )
        except Exception as exc:
            report_failure("Telemetry.start_request", exc)
            return RequestSpan(self, None, None, None)
