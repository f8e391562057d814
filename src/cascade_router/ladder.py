"""Assembling a ladder, once, for every entry point.

``build_ladder`` turns rungs and ladder settings into a ``Ladder``: the rungs' models resolved
by the entry point's ``Binding``, their runtime rules (with the ladder's defaults applied), the
judges their scorers name, and the ``Engine`` with its telemetry and decision log. The core
``Cascade``, LangChain's ``CascadeChatModel`` and ``CascadeMiddleware`` and LlamaIndex's
``CascadeLLM`` all call it; each only supplies its ``Binding`` (how to turn what the user wrote
into its framework's model objects) and translates its framework's messages and results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import ValidationError

from cascade_router import policy
from cascade_router.adaptation import ThresholdAdaptation, ThresholdAdapter
from cascade_router.catalog import capabilities
from cascade_router.circuit import (
    DEFAULT_ENDPOINTS,
    CircuitBreakers,
    CircuitBreakerSettings,
    breaker_key,
    endpoint_of,
)
from cascade_router.config import (
    Calibration,
    EarlyAbortSettings,
    HedgeSettings,
    LadderSettings,
    Rung,
    ShadowSettings,
    as_rungs,
    check_ladder,
    validation_problem,
)
from cascade_router.engine import Engine, Overrides
from cascade_router.errors import ConfigError
from cascade_router.observability.decision_log import DecisionLog, shared_log
from cascade_router.observability.redaction import register_object_secrets
from cascade_router.observability.shadow import ShadowSampler
from cascade_router.observability.telemetry import Telemetry
from cascade_router.pricing import Price, catalog_context_window
from cascade_router.routing import RequestLimits, Router, RoutingRule
from cascade_router.scorers import Scorer

M = TypeVar("M")
"""The framework's model type: a core ``Backend``, a LangChain chat model, a LlamaIndex LLM."""


@dataclass(frozen=True, slots=True)
class RungRuntime:
    """A rung as the engine runs it: its rule, the ladder's defaults applied, and the names its
    entry point resolved."""

    index: int
    name: str
    provider: str | None
    model: str | None
    scorer: Scorer | None
    threshold: float | None
    timeout: float | None
    """Bounds the model call and, separately, the scorer; None: no limit."""
    price: Price | None
    on_missing: policy.OnMissing
    on_tool_call: policy.OnToolCall
    validate_output: bool
    max_retries: int
    calibration: Calibration | None = None
    """What the threshold was calibrated on, for drift watching."""
    first_token_timeout: float | None = None
    """Bounds a streamed call's first chunk (instead of ``timeout``); None: ``timeout``."""
    stall_timeout: float | None = None
    """Bounds the gap between a started stream's chunks; None: no limit."""
    on_policy_error: policy.OnPolicyError = "raise"
    prefill: bool = False
    """Whether the provider continues a final assistant message (``Rung.prefill``)."""
    context_window: int | None = None
    """The model's context window in tokens (``Rung.context_window``, else the catalog's)."""
    max_output_tokens: int | None = None
    """The most tokens the model is asked to answer with (its ``max_tokens``), where stated."""

    @property
    def has_scorer(self) -> bool:
        return self.scorer is not None


ROUTE_KWARGS = ("max_cost_usd", "deadline_s", "route_metadata")
"""Per-request keyword arguments for the routing rules, taken by every entry point."""


def request_limits(
    max_cost_usd: Any = None, deadline_s: Any = None, route_metadata: Any = None
) -> RequestLimits | None:
    """One request's routing inputs, checked; None when it gives none."""
    if max_cost_usd is None and deadline_s is None and not route_metadata:
        return None
    for field_name, value in (("max_cost_usd", max_cost_usd), ("deadline_s", deadline_s)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf")
        ):
            raise ConfigError(field_name, f"expected a positive number, got {value!r}")
    if route_metadata is not None and not isinstance(route_metadata, Mapping):
        raise ConfigError("route_metadata", f"expected a mapping, got {type(route_metadata).__name__}")
    return RequestLimits(
        float(max_cost_usd) if max_cost_usd is not None else None,
        float(deadline_s) if deadline_s is not None else None,
        dict(route_metadata or {}),
    )


_MAX_TOKENS_ATTRS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict")


def max_tokens_of(spec: Any, model: Any) -> int | None:
    """The answer length a rung's model is limited to: ``max_tokens`` in a model mapping, or the
    model object's own setting (LangChain's and LlamaIndex's chat models, the native backends)."""
    for source in (spec, model):
        if isinstance(source, Mapping):
            value = source.get("max_tokens")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
            continue
        for attr in _MAX_TOKENS_ATTRS:
            value = getattr(source, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _catalog_window(provider: str | None, model: str | None) -> int | None:
    return catalog_context_window(provider, model) if model else None


def runtimes_for(
    rungs: Sequence[Rung],
    identities: Sequence[tuple[str | None, str | None]],
    fallback: Sequence[str],
    *,
    models: Sequence[Any] = (),
    timeout: float | None = None,
    max_retries: int = 0,
    first_token_timeout: float | None = None,
    stall_timeout: float | None = None,
    on_policy_error: policy.OnPolicyError = "raise",
) -> list[RungRuntime]:
    """Runtimes for a ladder whose models were resolved: ``identities`` are each model's
    (provider, model name), ``fallback`` a name for a rung with neither a name nor a model name.

    ``timeout`` and ``max_retries`` are the ladder's defaults: a rung that sets its own (even to
    null or 0) keeps it. Repeated names get ``#index`` so that every rung's name is unique in
    results and traces.
    """
    names: list[str] = []
    for i, rung in enumerate(rungs):
        name = rung.name or identities[i][1] or fallback[i]
        names.append(name if name not in names else f"{name}#{i}")
    out = []
    for i, rung in enumerate(rungs):
        explicit = rung.model_fields_set
        out.append(
            RungRuntime(
                index=i,
                name=names[i],
                provider=rung.provider or identities[i][0],
                model=identities[i][1],
                scorer=rung.scorer,
                threshold=rung.threshold,
                timeout=rung.timeout if "timeout" in explicit else timeout,
                price=rung.price,
                on_missing=rung.on_missing,
                on_tool_call=rung.on_tool_call,
                validate_output=rung.validate_output,
                max_retries=rung.max_retries
                if "max_retries" in explicit and rung.max_retries is not None
                else max_retries,
                calibration=rung.calibration,
                first_token_timeout=rung.first_token_timeout
                if "first_token_timeout" in explicit
                else first_token_timeout,
                stall_timeout=rung.stall_timeout if "stall_timeout" in explicit else stall_timeout,
                on_policy_error=on_policy_error,
                prefill=rung.prefill
                if rung.prefill is not None
                else (rung.provider or identities[i][0] or "").lower() == "anthropic",
                context_window=rung.context_window
                or _catalog_window(rung.provider or identities[i][0], identities[i][1]),
                max_output_tokens=max_tokens_of(rung.model, models[i] if i < len(models) else None),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Binding(Generic[M]):
    """How an entry point turns model references into its framework's model objects."""

    resolve: Callable[[Any, str], M]
    """``resolve(reference, field)``: the model for what the user wrote (an object or a
    ``provider:model`` string); raises ``ConfigError`` naming ``field`` when it cannot."""
    identity: Callable[[M], tuple[str | None, str | None]]
    """(provider, model name) of a resolved model, for names, prices and traces."""
    fallback_name: Callable[[M, int], str] = lambda model, index: f"rung{index}"
    """A rung's name when neither the rung nor its model names it."""
    returns_logprobs: Callable[[M], bool | None] = lambda model: None
    """False when the model can never return logprobs: a logprob scorer on it is refused."""
    asking_logprobs: Callable[[M], M] = lambda model: model
    """The model set up to return token logprobs (with the top alternatives), for a rung whose
    scorer reads them: what its client needs asked, where the client allows it (llama.cpp's
    OpenAI-compatible servers, for one, compute logprobs only when ``top_logprobs`` is set)."""
    propagate: tuple[type[BaseException], ...] = ()
    """Exception types that are the framework's control flow (LangGraph's interrupts): they
    pass through the ladder instead of falling back."""


@dataclass(frozen=True, slots=True)
class Judges(Generic[M]):
    """The judge models the rungs' scorers name, resolved once.

    Looked up by the reference object itself (identity, then equality), never by ``id()``: a
    deep copy or a pickle of the entry point copies the references and this table together,
    while ids change.
    """

    entries: tuple[tuple[Any, M, str | None, str | None], ...] = ()

    def get(self, ref: Any) -> tuple[M, str | None, str | None]:
        for known, model, provider, name in self.entries:
            if known is ref:
                return model, provider, name
        for known, model, provider, name in self.entries:
            if _same(known, ref):
                return model, provider, name
        raise ConfigError("scorer.judge", f"the judge {ref!r} was not resolved when the ladder was built")


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _resolve(bind: Binding[M], ref: Any, field: str) -> M:
    model = bind.resolve(ref, field)
    # Whatever the framework, the keys and passwords a model holds are redacted by value from
    # then on: a provider echoing its key back in an error must not get it into a span or log.
    register_object_secrets(model)
    return model


def resolve_judges(rungs: Sequence[Rung], bind: Binding[M]) -> Judges[M]:
    entries: list[tuple[Any, M, str | None, str | None]] = []
    for i, rung in enumerate(rungs):
        for ref in rung.scorer.models() if rung.scorer is not None else []:
            if any(known is ref for known, *_ in entries):
                continue
            judge = _resolve(bind, ref, f"rungs[{i}].scorer.judge")
            entries.append((ref, judge, *bind.identity(judge)))
    return Judges(tuple(entries))


@dataclass(slots=True)
class Ladder(Generic[M]):
    """An assembled ladder: what every entry point runs requests through."""

    rungs: list[Rung]
    """The rungs as configured, their ``model`` resolved to the framework's objects."""
    models: list[M]
    identities: list[tuple[str | None, str | None]]
    judges: Judges[M]
    engine: Engine
    label: str = field(init=False)
    """``cascade[nano>haiku>opus]``: the ladder as one model name, for tracers."""

    def __post_init__(self) -> None:
        self.label = "cascade[" + ">".join(r.name for r in self.engine.rungs) + "]"

    def judge(self, ref: Any | None, rung: int) -> tuple[M, str | None, str | None]:
        """The model a scorer of rung ``rung`` asks for: ``ref`` None is the rung's own model."""
        if ref is None:
            return (self.models[rung], *self.identities[rung])
        return self.judges.get(ref)

    def overrides(
        self,
        start_at: int | str | None = None,
        thresholds: Mapping[int | str, float] | None = None,
        *,
        max_cost_usd: float | None = None,
        deadline_s: float | None = None,
        route_metadata: Mapping[str, Any] | None = None,
    ) -> Overrides | None:
        """One request's overrides, rungs named by index or name; None when there are none.
        ``max_cost_usd``, ``deadline_s`` and ``route_metadata`` are for the routing rules.

        Raises ``ConfigError`` naming what is wrong: an unknown rung, a threshold outside [0, 1],
        a limit that is not a positive number.
        """
        limits = request_limits(max_cost_usd, deadline_s, route_metadata)
        if start_at is None and not thresholds and limits is None:
            return None
        start = 0 if start_at is None else self._rung_index(start_at, "start_at")
        resolved: dict[int, float] = {}
        for ref, value in (thresholds or {}).items():
            index = self._rung_index(ref, f"thresholds[{ref!r}]")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(f"thresholds[{ref!r}]", f"expected a number in [0, 1], got {value!r}")
            resolved[index] = float(value)
        return Overrides(start, resolved, limits)

    def _rung_index(self, ref: int | str, field_name: str) -> int:
        names = [r.name for r in self.engine.rungs]
        if isinstance(ref, bool):
            raise ConfigError(field_name, f"expected a rung name or index, got {ref!r}")
        if isinstance(ref, int):
            if 0 <= ref < len(names):
                return ref
            raise ConfigError(field_name, f"no rung {ref}: the ladder has rungs 0..{len(names) - 1}")
        if isinstance(ref, str) and ref in names:
            return names.index(ref)
        raise ConfigError(field_name, f"no rung named {ref!r}; the rungs are {names}")

    @property
    def decision_log(self) -> DecisionLog | None:
        return self.engine.decision_log

    def record_feedback(
        self, request_id: str, score: float | bool, *, comment: str | None = None, rung: int | None = None
    ) -> None:
        """Attach a quality label in [0, 1] (or a thumbs up / down) to a request: stored in the
        decision log, and taught to ``adapt_thresholds`` and an adapting pre-router."""
        engine = self.engine
        log = engine.decision_log
        if log is None and not engine.learns_from_feedback:
            raise ConfigError("decision_log", "this cascade has no decision_log to record feedback in")
        if log is not None:
            log.record_feedback(request_id, score, comment, rung=rung)
        engine.feedback(request_id, float(score), rung)


def build_ladder(
    rungs: Sequence[Rung | Mapping[str, Any]],
    bind: Binding[M],
    *,
    name: str = "cascade",
    on_exhausted: policy.OnExhausted = "raise",
    accept_last: bool = True,
    timeout: float | None = None,
    max_retries: int = 0,
    decision_log: str | Path | DecisionLog | None = None,
    tracing: bool = True,
    inference_spans: bool = True,
    annotate: bool = False,
    shadow: ShadowSettings | Mapping[str, Any] | None = None,
    retry_max_wait: float = 20.0,
    first_token_timeout: float | None = None,
    stall_timeout: float | None = None,
    on_policy_error: policy.OnPolicyError = "raise",
    circuit_breaker: CircuitBreakerSettings | Mapping[str, Any] | None = None,
    early_abort: EarlyAbortSettings | Mapping[str, Any] | None = None,
    hedge: HedgeSettings | Mapping[str, Any] | None = None,
    on_midstream_failure: Literal["raise", "continue"] = "raise",
    routing: Sequence[RoutingRule | Mapping[str, Any]] | None = None,
    adapt_thresholds: ThresholdAdaptation | Mapping[str, Any] | None = None,
) -> Ladder[M]:
    """Assemble a ladder from its rungs and the ladder settings (``LadderSettings``' fields).

    ``annotate`` is accepted for symmetry with the settings; entry points that return messages
    apply it themselves.
    """
    del annotate
    # Validated here, whatever the entry point: an option that means the same everywhere is
    # checked the same way everywhere.
    try:
        settings = LadderSettings(
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
            on_midstream_failure=on_midstream_failure,
            routing=routing or [],
            adapt_thresholds=adapt_thresholds,
        )
    except ValidationError as exc:
        raise ConfigError(*validation_problem(exc)) from None
    if settings.shadow is not None and decision_log is None:
        raise ConfigError("shadow", "shadow answers are stored in the decision log: set decision_log too")
    parsed = as_rungs(list(rungs) if isinstance(rungs, list | tuple) else rungs)
    check_ladder(parsed, accept_last=accept_last)
    models = [_resolve(bind, r.model, f"rungs[{i}].model") for i, r in enumerate(parsed)]
    for i, (rung, model) in enumerate(zip(parsed, models, strict=True)):
        _check_signals(rung, model, bind, f"rungs[{i}].scorer")
    models = [
        bind.asking_logprobs(m) if r.scorer is not None and r.scorer.needs_logprobs() else m
        for r, m in zip(parsed, models, strict=True)
    ]
    identities = [bind.identity(m) for m in models]
    runtimes = runtimes_for(
        parsed,
        identities,
        [bind.fallback_name(m, i) for i, m in enumerate(models)],
        models=models,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        first_token_timeout=settings.first_token_timeout,
        stall_timeout=settings.stall_timeout,
        on_policy_error=settings.on_policy_error,
    )
    breakers = (
        CircuitBreakers(
            settings.circuit_breaker,
            [
                breaker_key(r.provider, r.model, endpoint_of(m), r.name)
                for r, m in zip(runtimes, models, strict=True)
            ],
        )
        if settings.circuit_breaker is not None
        else None
    )
    engine = Engine(
        runtimes,
        settings.on_exhausted,
        accept_last=accept_last,
        propagate=bind.propagate,
        name=name,
        telemetry=Telemetry(
            name, [r.name for r in runtimes], enabled=tracing, inference_spans=inference_spans
        ),
        decision_log=shared_log(decision_log) if decision_log is not None else None,
        shadow=ShadowSampler(
            name,
            rate=settings.shadow.rate,
            max_cost_per_day_usd=settings.shadow.max_cost_per_day_usd,
            max_in_flight=settings.shadow.max_in_flight,
        )
        if settings.shadow is not None
        else None,
        retry_max_wait=settings.retry_max_wait,
        breakers=breakers,
        early_abort=settings.early_abort,
        hedge=settings.hedge,
        on_midstream_failure=settings.on_midstream_failure,
        router=Router(settings.routing, runtimes) if settings.routing else None,
        thresholds=ThresholdAdapter(settings.adapt_thresholds, runtimes)
        if settings.adapt_thresholds is not None
        else None,
    )
    resolved = [
        r if r.model is m else r.model_copy(update={"model": m}) for r, m in zip(parsed, models, strict=True)
    ]
    return Ladder(resolved, models, identities, resolve_judges(parsed, bind), engine)


class LadderModel(LadderSettings):
    """Base of the pydantic entry points (``CascadeChatModel``, ``CascadeLLM``).

    Their engine (telemetry, decision log, resolved judges) is derived state: it is rebuilt from
    the fields, never copied, so copies, deep copies and unpickled models each get their own
    engine over the same settings, and ``model_copy(update=...)`` always takes effect.
    Subclasses build the engine in ``model_post_init`` and may carry more derived state across
    copies with ``_copy_extra`` / ``_restore_extra``.
    """

    def _copy_extra(self) -> Any:
        return None

    def _restore_extra(self, extra: Any) -> None:
        return None

    def __getstate__(self) -> dict[Any, Any]:
        state = dict(super().__getstate__())
        state["__pydantic_private__"] = {}
        state["__cascade_extra__"] = self._copy_extra()
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        state = dict(state)
        extra = state.pop("__cascade_extra__", None)
        super().__setstate__(state)
        self.model_post_init(None)
        if extra is not None:
            self._restore_extra(extra)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        clone = type(self).__new__(type(self))
        clone.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return clone

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; ``update`` is validated and rebuilds the ladder, so it always takes effect."""
        if not update:
            return super().model_copy(deep=deep)
        unknown = set(update) - set(type(self).model_fields)
        if unknown:
            raise ValueError(f"model_copy(update=...): unknown fields {sorted(unknown)}")
        source = copy.deepcopy(self) if deep else self
        data = {name: getattr(source, name) for name in type(self).model_fields}
        clone = type(self)(**{**data, **update})
        extra = self._copy_extra()
        if extra is not None:
            clone._restore_extra(extra)
        return clone


def _check_signals(rung: Rung, model: Any, bind: Binding[Any], field: str) -> None:
    # A logprob scorer on a model that never returns logprobs would escalate every request for a
    # missing signal: a configuration mistake, so it is refused here rather than paid for later.
    if rung.scorer is None or not rung.scorer.needs_logprobs():
        return
    identity = bind.identity(model)
    returns = bind.returns_logprobs(model)
    provider = rung.provider or identity[0]
    endpoint = endpoint_of(model)
    hosted = endpoint is None or endpoint.rstrip("/") == DEFAULT_ENDPOINTS.get(provider or "")
    if returns is not False and hosted and identity[1]:
        # The provider's own API may refuse them whatever the client asks (OpenAI's reasoning
        # models; Claude has none): the catalog knows. Not for a server of one's own.
        returns = False if capabilities(provider, identity[1]).logprobs is False else returns
    if returns is not False:
        return
    raise ConfigError(
        field,
        f"{identity[0] or type(model).__name__}:{identity[1]} returns no token logprobs, so a "
        f"{rung.scorer.method!r} scorer that needs them would never give a score; use a judge, "
        "validity, learned or callable scorer, or put a judge after the logprob scorer in a "
        "first_available scorer",
    )
