"""Typed configuration of a ladder, loadable from YAML, TOML, JSON or a dict.

```yaml
name: support-bot
rungs:
  - model: openai:gpt-4.1-nano
    scorer: {kind: logprob, aggregate: mean}
    threshold: 0.85
  - model: anthropic:claude-opus-4-6
```
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from cascade_router.adaptation import ThresholdAdaptation
from cascade_router.circuit import CircuitBreakerSettings
from cascade_router.errors import ConfigError
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.observability.redaction import safe_url, scrub
from cascade_router.policy import OnExhausted, OnMissing, OnPolicyError, OnToolCall
from cascade_router.pricing import Price
from cascade_router.routing import RoutingRule, parse_rules
from cascade_router.scorers import Scorer, parse_scorer

MAX_TIMEOUT = 86_400.0
"""One day: longer "timeouts" are mistakes, and past ``threading.TIMEOUT_MAX`` a wait fails."""


class Calibration(BaseModel):
    """What a rung's threshold was calibrated on, written by ``cascade-router calibrate``: live
    scores are compared with it to notice drift (``cascade_router.observability.drift``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    score_edges: list[float] = Field(min_length=9, max_length=9)
    """The nine cut points that split the calibration data's scores into ten equal shares."""
    accepted_share: float = Field(ge=0, le=1)
    """The share of the calibration data's answers the threshold accepted."""
    items: int = Field(default=0, ge=0)
    """How many calibration items these come from."""
    guaranteed: bool = False
    """Whether the threshold was calibrated with a guarantee (``calibrate --guaranteed``): then
    ``adapt_thresholds`` never moves it lower."""
    window: int = Field(default=500, ge=50, le=100_000)
    """Live scored answers compared at a time (a rolling window)."""
    psi_alert: float = Field(default=0.25, gt=0)
    """Population stability index of the window's scores above which it counts as drift."""
    share_alert: float = Field(default=0.10, gt=0, le=1)
    """Difference in accepted share (window vs calibration) above which it counts as drift."""

    @field_validator("score_edges")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if any(b < a for a, b in itertools.pairwise(value)):
            raise ValueError("score_edges must be ascending")
        return value


class ShadowSettings(BaseModel):
    """Shadow sampling (``cascade_router.observability.shadow``): for a share of the requests a
    lower rung answered, the remaining rungs are also called off the request path and their
    answers stored in the decision log beside the live one."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    rate: float = Field(gt=0, le=1)
    """The share of eligible requests (answered below the last rung) that are shadowed."""
    max_cost_per_day_usd: float = Field(ge=0, allow_inf_nan=False)
    """What shadow calls may cost per UTC day; past it, requests are no longer shadowed."""
    max_in_flight: int = Field(default=2, ge=1, le=64)
    """Shadowed requests running at once; a sampled request beyond it is dropped (counted)."""


class EarlyAbortSettings(BaseModel):
    """The ``early_abort`` streaming mode (``docs/streaming.md``): a scored rung (not the final
    one) is streamed from the provider, never to the caller, and judged every ``check_every``
    chunks by its scorer's prefix check; it is abandoned, and the next rung called, as soon as
    the rule below says its answer will not be accepted. The answer still reaches the caller
    only once accepted. Scorers without a prefix check (judges) score the whole answer."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    check_every: int = Field(default=8, ge=1, le=10_000)
    """Chunks between two prefix checks."""
    min_tokens: int = Field(default=16, ge=0, le=1_000_000)
    """Chunks before the margin rule may abandon a rung (a scorer's own "hopeless" rule, such as
    a ``min`` logprob below the threshold or a wrong stated calculation, applies at once)."""
    margin: float = Field(default=0.15, ge=0, le=1, allow_inf_nan=False)
    """The margin rule: abandon when the prefix's score is below ``threshold - margin``."""


class HedgeSettings(BaseModel):
    """The ``hedged`` mode (``docs/streaming.md``): when a scored rung has not given an
    acceptable answer within a delay (a rung streaming live: its first token), the next rung is
    started in parallel; the first acceptable answer (first token) wins and the other call is
    cancelled. Both calls are recorded and paid."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    delay_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    """Seconds to wait before hedging. None: the rung's ``quantile`` latency over its recent
    answers in this process (no hedge until it has ``min_samples`` of them): the time to its
    whole answer for a scored rung, to its first token for a rung streaming live."""
    quantile: float = Field(default=0.9, gt=0, lt=1)
    """Which latency quantile of the rung is the delay when ``delay_s`` is not set."""
    min_samples: int = Field(default=20, ge=1, le=100_000)
    """Recent answers of a rung needed before its observed latency is used."""
    window: int = Field(default=200, ge=10, le=100_000)
    """Recent answers per rung kept for the latency quantile."""
    max_share: float = Field(default=0.1, gt=0, le=1)
    """The budget for extra calls: at most this share of the ladder's requests start a hedge
    (counted in this process); past it requests wait for the slow rung as in buffered mode."""
    when: Literal["slow", "low_prefix", "either"] = "slow"
    """What starts a hedge: ``slow`` (the rung has no acceptable answer after the delay),
    ``low_prefix`` (its answer's prefix score falls below ``threshold - prefix_margin`` while it
    streams: needs ``early_abort``, which scores the prefixes) or ``either``. ``low_prefix``
    spends the budget on the requests likely to escalate, not on every slow one."""
    prefix_margin: float = Field(default=0.05, ge=-1, le=1, allow_inf_nan=False)
    """With ``low_prefix``/``either``: hedge once a prefix score (after ``early_abort``'s
    ``min_tokens``) is below ``threshold - prefix_margin``. Keep it under ``early_abort``'s
    ``margin``: the band between the two is where a rung is hedged rather than abandoned. A
    negative margin also hedges prefixes a little above the threshold (more hedges, more cost)."""

    @property
    def on_prefix(self) -> bool:
        """Whether a low prefix score starts a hedge."""
        return self.when != "slow"

    @property
    def on_delay(self) -> bool:
        """Whether a slow rung starts a hedge."""
        return self.when != "low_prefix"


class Rung(BaseModel):
    """One model of the ladder and the rule for accepting its answers."""

    # No input values in validation errors: a key put in the wrong place would be printed.
    model_config = ConfigDict(
        extra="forbid",
        arbitrary_types_allowed=True,
        frozen=True,
        use_attribute_docstrings=True,
        hide_input_in_errors=True,
    )

    model: Any
    """The model: an object of the framework in use (a LangChain chat model, a LlamaIndex LLM, a
    core ``Backend``) or a ``provider:model`` string that the adapter resolves (LangChain with
    ``init_chat_model``; the core ``Cascade`` with its native ``openai`` / ``anthropic`` backends,
    which also take a mapping of ``provider``, ``model`` and backend options such as
    ``base_url`` and ``max_tokens``)."""
    name: str | None = None
    """Shown in results, traces and logs; defaults to the model's name."""
    scorer: Scorer | None = None
    """How confident to be in this rung's answer. None: accept any valid answer (a pure
    fallback rung, as in ``with_fallbacks``)."""
    threshold: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    """Accept the answer when its score is at least this. Required with a scorer, except on the
    final rung, which accepts without one unless the ladder's ``accept_last`` is off."""
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    """Seconds to wait for the model's whole answer (for a rung streaming to the caller: for its
    first chunk), and separately for its scorer; past either the attempt fails (the model: an
    error, the scorer: a scorer error) and the ladder moves on. Unset: the ladder's
    ``timeout``; an explicit null: no limit for this rung."""
    first_token_timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    """Seconds to wait for the first chunk of a streamed call (a rung streaming to the caller);
    past it the attempt fails with a timeout and the ladder moves on. Unset: the ladder's
    ``first_token_timeout``; without either, ``timeout`` bounds the first chunk."""
    stall_timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    """Seconds a streamed call may go without a chunk once it has started; past it the stream
    counts as failed (before any output reached the caller: the ladder moves on; after: the
    request fails with ``CascadeStreamError``). Unset: the ladder's ``stall_timeout``."""
    prefill: bool | None = None
    """Whether this rung's provider continues a conversation's final assistant message (a
    "prefill"), as Anthropic's API does; OpenAI's chat API starts a new answer instead. Used when
    a broken stream is continued on this rung (``on_midstream_failure: continue``): with prefill
    the emitted text is the assistant's message, without it a user turn also asks to continue.
    None: by provider (``anthropic``: yes)."""
    context_window: int | None = Field(default=None, ge=1, le=100_000_000)
    """The model's context window in tokens, for the ``context_length`` routing rule. None: the
    price catalog's (`genai-prices`), where it knows the model."""
    price: Price | None = None
    """Price per million tokens; overrides the `genai-prices` catalog. ``0`` (or ``free``) for
    a model that costs nothing, such as one on your own machine: its calls then cost $0, where a
    model the catalog does not know costs "unknown"."""
    provider: str | None = None
    """Provider id for pricing and telemetry, when the adapter cannot tell (``openai``...)."""
    on_missing: OnMissing = "escalate"
    """What to do when the scorer's signal is absent (no logprobs returned): ``escalate`` or
    ``accept``. To fall through to another signal, use a ``first_available`` scorer."""
    on_tool_call: OnToolCall = "accept"
    """How an answer that calls tools is judged once it is well-formed (known tool, JSON
    arguments): ``accept`` it, ``score`` it like text, or always ``escalate``."""
    validate_output: bool = True
    """Reject empty answers, malformed tool calls and unparseable structured output before
    scoring. Turn off only for rungs whose output you validate yourself."""
    max_retries: int | None = Field(default=None, ge=0, le=100)
    """Retries of this rung on an error before falling back to the next one (for a rung
    streaming to the caller: retries before its first chunk). Unset: the ladder's
    ``max_retries``; an explicit 0 never retries this rung. Provider clients usually retry on
    their own; this is for those that do not."""
    calibration: Calibration | None = None
    """The data the threshold was calibrated on (written by ``cascade-router calibrate``); when
    set, live scores are watched for drift against it (a warning, a metric, a span event)."""

    @field_validator("scorer", mode="before")
    @classmethod
    def _parse_scorer(cls, value: Any) -> Any:
        return parse_scorer(value)

    @field_validator("model")
    @classmethod
    def _model_given(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("a rung needs a model")
        return value

    @field_validator("price", mode="before")
    @classmethod
    def _free(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "free":
            return Price(input_per_mtok=0, output_per_mtok=0)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value == 0:
                return Price(input_per_mtok=0, output_per_mtok=0)
            raise ValueError(
                "a price other than 0 needs both parts: {input_per_mtok: ..., output_per_mtok: ...}"
            )
        return value

    @field_validator(
        "threshold", "timeout", "max_retries", "first_token_timeout", "stall_timeout", mode="before"
    )
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        # pydantic reads `true` as 1: a threshold of `true` is a typo, not "accept at 1.0".
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got the boolean {value}")
        return value

    @field_serializer("model")
    def _model_shown(self, model: Any) -> Any:
        # Serialized configs go to logs and tracers: no key or password of a model mapping.
        return scrub(model) if isinstance(model, str | Mapping) else describe_model(model)

    def __repr_args__(self) -> Any:
        # A model object's own repr may print its base URL with a password, or its headers.
        for key, value in super().__repr_args__():
            if key != "model":
                yield key, value
            elif isinstance(value, str | Mapping):
                yield key, scrub(value)
            else:
                yield key, _Shown(describe_model(value))


class _Shown(str):
    """A string that reprs as itself (for ``describe_model`` inside a repr)."""

    def __repr__(self) -> str:
        return str(self)


def describe_model(model: Any) -> str:
    """A model object as its class and name, never its settings (which may hold a key)."""
    name = None
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str):
            name = value
            break
    return f"{type(model).__name__}({name!r})" if name else type(model).__name__


class LadderSettings(BaseModel):
    """Ladder-wide behaviour, the same options on every entry point (``Cascade``,
    ``CascadeChatModel``, ``CascadeMiddleware``, ``CascadeLLM``) and in config files."""

    model_config = ConfigDict(
        use_attribute_docstrings=True, arbitrary_types_allowed=True, hide_input_in_errors=True
    )

    on_exhausted: OnExhausted = "raise"
    """When no rung is accepted: ``raise`` a ``CascadeExhaustedError`` holding every attempt's
    error, or return the ``best``-scored usable answer (never an invalid one; with none, raise)."""
    accept_last: bool = True
    """Accept the final rung's answer without checking its threshold."""
    annotate: bool = False
    """Append a visible "answered by <model>" line to the answer, for products that show it."""
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    """Default per-rung timeout in seconds, for rungs that do not set their own."""
    max_retries: int = Field(default=0, ge=0, le=100)
    """Default per-rung retries of a retryable error (a connection error, 408, 409, 429, 5xx)
    before falling back, for rungs that do not set their own. Other errors are never retried
    (``cascade_router.failures``)."""
    retry_max_wait: float = Field(default=20.0, ge=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    """The longest wait before a retry, in seconds: a provider whose ``Retry-After`` asks for
    more gets the next rung instead of a retry."""
    first_token_timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    """Default ``first_token_timeout`` of the rungs (seconds to a streamed call's first chunk)."""
    stall_timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    """Default ``stall_timeout`` of the rungs (seconds a started stream may go without a chunk)."""
    on_policy_error: OnPolicyError = "raise"
    """When a provider refuses the content (content filter, safety refusal by the API):
    ``raise`` its error to the caller with the provider's reason, or ``escalate`` to the next
    rung. Auth and bad-request errors are always raised at once."""
    early_abort: EarlyAbortSettings | None = None
    """Stream scored rungs from the provider and abandon an answer as soon as its start shows
    it will be rejected (``{}`` for the defaults). None: ``buffered``, each scored rung answers
    whole before it is scored."""
    on_midstream_failure: Literal["raise", "continue"] = "raise"
    """When a live stream breaks after part of the answer reached the caller: ``raise``
    ``CascadeStreamError``, or ``continue`` on the next rung that streams live, with the emitted
    text as its starting point, splicing its answer on without repeating or dropping text."""
    hedge: HedgeSettings | None = None
    """Start the next rung in parallel when a scored rung is slow (``{}`` for the defaults: the
    rung's p90 latency, at most 10 % of requests hedged). None: off."""
    circuit_breaker: CircuitBreakerSettings | None = None
    """Skip a rung whose endpoint keeps failing, and probe it again after a cooldown
    (``cascade_router.circuit``); ``{}`` for the defaults, ``{store: "redis://..."}`` to share
    the state between processes. None: off."""
    routing: list[RoutingRule] = Field(default_factory=list)
    """Routing rules asked before the ladder runs and before each rung (``cascade_router.routing``,
    ``docs/routing.md``): ``context_length``, ``cost``, ``budget``, ``deadline``, ``domain``. A rung a rule
    rules out is skipped (recorded with the rule's reason); a rule may refuse the request."""
    adapt_thresholds: ThresholdAdaptation | None = None
    """Move the scored rungs' thresholds with labelled feedback (``record_feedback``) towards a
    target error rate among accepted answers (``cascade_router.adaptation``); never below a
    threshold calibrated with a guarantee. None: off (thresholds stay as configured)."""
    decision_log: str | Path | DecisionLog | None = None
    """Write one record per request to this log: a SQLite file path, a SQLAlchemy URL
    (``postgresql+psycopg://...``) or a ``DecisionLog``. None: no log."""
    tracing: bool = True
    """Emit OpenTelemetry spans through the global tracer provider (no-ops until one is set)."""
    inference_spans: bool = True
    """Emit a ``chat {model}`` span per model call. Turn off when a provider instrumentation
    (OpenInference, opentelemetry-instrumentation-openai...) already does, so that tracing
    backends do not count the tokens twice."""
    shadow: ShadowSettings | None = None
    """Call the rungs above the answering one for a sampled share of requests, off the request
    path, within a daily budget, and log their answers (needs ``decision_log``). None: off."""

    @field_validator("routing", mode="before")
    @classmethod
    def _parse_routing(cls, value: Any) -> Any:
        return parse_rules(value)

    @field_validator(
        "timeout", "max_retries", "retry_max_wait", "first_token_timeout", "stall_timeout", mode="before"
    )
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got the boolean {value}")
        return value

    @model_validator(mode="after")
    def _hedge_needs_prefixes(self) -> Any:
        hedge = self.hedge
        if hedge is None or not hedge.on_prefix:
            return self
        if self.early_abort is None:
            raise ConfigError(
                "hedge.when",
                f"{hedge.when!r} needs early_abort (it scores the prefixes): set early_abort: {{}}",
            )
        if hedge.prefix_margin >= self.early_abort.margin:
            raise ConfigError(
                "hedge.prefix_margin",
                f"{hedge.prefix_margin:g} is not under early_abort.margin {self.early_abort.margin:g}: "
                "a low prefix would abandon the rung before it could be hedged",
            )
        return self

    @field_serializer("decision_log")
    def _log_shown(self, value: str | Path | DecisionLog | None) -> str | None:
        return None if value is None else _log_target(value)

    def __repr_args__(self) -> Any:
        # LangChain sends repr(model) to every callback handler and LangSmith for models that are
        # not serializable: a decision-log URL's password must not be in it.
        for key, value in super().__repr_args__():
            yield key, (_log_target(value) if key == "decision_log" and value is not None else value)

    def ladder_settings(self) -> dict[str, Any]:
        """These settings as keyword arguments (what ``build_ladder`` reads)."""
        return {name: getattr(self, name) for name in LadderSettings.model_fields}


def _log_target(value: str | Path | DecisionLog) -> str:
    return repr(value) if isinstance(value, DecisionLog) else safe_url(str(value))


class LadderConfig(LadderSettings):
    """A whole ladder, as loaded from a file or a dict."""

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True, hide_input_in_errors=True
    )

    name: str = "cascade"
    """Name of the cascade in traces and logs."""
    rungs: list[Rung]
    """The models, cheapest first."""

    @field_validator("rungs", mode="before")
    @classmethod
    def _rungs(cls, value: Any) -> Any:
        return as_rungs(value)

    def adapter_fields(self) -> dict[str, Any]:
        """Everything an entry point's constructor takes, under the names they all share."""
        return {"name": self.name, "rungs": self.rungs, **self.ladder_settings()}

    @model_validator(mode="after")
    def _check(self) -> LadderConfig:
        check_ladder(self.rungs, accept_last=self.accept_last)
        return self


def as_rungs(value: Any) -> list[Rung]:
    """Rungs from a list of ``Rung`` objects and dicts; errors name ``rungs[i]``."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        hint = " (one rung's model? give a list: [{'model': ...}, ...])" if isinstance(value, str) else ""
        raise ConfigError("rungs", f"expected a list of rungs, got {type(value).__name__}{hint}")
    rungs = []
    for i, item in enumerate(value):
        if isinstance(item, Rung):
            rungs.append(item)
        elif isinstance(item, Mapping):
            try:
                rungs.append(Rung.model_validate(dict(item)))
            except ValidationError as exc:
                raise ConfigError(*validation_problem(exc, f"rungs[{i}]")) from None
            except ConfigError as exc:
                raise ConfigError(f"rungs[{i}].{exc.field}", exc.problem) from None
        else:
            raise ConfigError(f"rungs[{i}]", f"expected a Rung or a dict, got {type(item).__name__}")
    return rungs


def validation_problem(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    """(field path, message) of a validation error, without the input value (which may be a
    key put in the wrong place)."""
    err = exc.errors(include_input=False, include_url=False)[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # raised by one of our validators: it names its field
        return (f"{prefix}.{cause.field}" if prefix else cause.field), cause.problem
    path = prefix
    if isinstance(cause, ValueError):
        err["msg"] = str(cause)
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field (check its spelling and where it belongs)"
    return path or "config", message


def check_ladder(rungs: list[Rung], *, accept_last: bool) -> None:
    """Rules that need the whole ladder: non-empty, thresholds where they matter, unique names."""
    if not rungs:
        raise ConfigError("rungs", "the ladder is empty; give at least one rung")
    last = len(rungs) - 1
    for i, rung in enumerate(rungs):
        final = accept_last and i == last
        if rung.scorer is not None and rung.threshold is None and not final:
            raise ConfigError(f"rungs[{i}].threshold", "required when the rung has a scorer")
        if rung.threshold is not None and rung.scorer is None:
            raise ConfigError(f"rungs[{i}].threshold", "given, but the rung has no scorer to compare it with")
    names = [r.name for r in rungs if r.name is not None]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("rungs", f"rung name {name!r} is used twice")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML, TOML or JSON file; every mistake is a ``ConfigError`` naming
    the file (and the line, where the parser knows it)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml", ".json"):
        raise ConfigError(str(path), "unknown config format; use .yaml, .yml, .toml or .json")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc}") from None
    data = _parse(text, suffix, str(path))
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the file must hold a mapping with a 'rungs' list")
    resolve_ladder_paths(data, p.parent)
    return data


def resolve_ladder_paths(data: Mapping[str, Any], base: Path) -> None:
    """Make the files a ladder's mapping names (learned scorers, a pre-router) relative to
    ``base``, the folder of the file it was read from."""
    rungs = data.get("rungs")
    for rung in rungs if isinstance(rungs, list) else []:
        if isinstance(rung, dict):
            _resolve_paths(rung.get("scorer"), base)
    routing = data.get("routing")
    for rule in routing if isinstance(routing, list) else []:
        _resolve_paths(rule, base)  # a pre-router's file, likewise


def _parse(text: str, suffix: str, where: str) -> Any:
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{where}{line}", f"not valid YAML: {problem}") from None
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(where, f"not valid TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}, line {exc.lineno}", f"not valid JSON: {exc.msg}") from None


def _yaml_line(text: str, path: tuple[Any, ...]) -> int | None:
    """The line (1-based) of the YAML node at ``path`` (keys and list indices), if it exists."""
    import yaml

    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if match is None:
                break
            line = next(k for k, v in node.value if v is match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _resolve_paths(scorer: Any, base: Path) -> None:
    """Scorer and routing-rule files named in a config file are relative to that file, not to the
    working folder."""
    if not isinstance(scorer, dict):
        return
    path = scorer.get("path")
    if isinstance(path, str) and not Path(path).is_absolute():
        scorer["path"] = str((base / path).resolve())
    for inner in scorer.get("scorers") or []:
        _resolve_paths(inner, base)


def load_config(source: str | Path | Mapping[str, Any]) -> LadderConfig:
    """A ``LadderConfig`` from a file path or a mapping; mistakes are ``ConfigError``s naming the
    field (and, for a file, the file and the field's line)."""
    if isinstance(source, Mapping):
        return _validate(dict(source), where=None, text=None)
    data = read_config_file(source)
    text = (
        Path(source).read_text(encoding="utf-8") if Path(source).suffix.lower() in (".yaml", ".yml") else None
    )
    return _validate(data, where=str(source), text=text)


def _validate(data: dict[str, Any], *, where: str | None, text: str | None) -> LadderConfig:
    try:
        return LadderConfig.model_validate(data)
    except ValidationError as exc:
        field, problem = validation_problem(exc)
        loc = _loc(field)
    except ConfigError as exc:
        field, problem = exc.field, exc.problem
        loc = _loc(field)
    if where is None:
        raise ConfigError(field, problem) from None
    line = _yaml_line(text, loc) if text is not None else None
    raise ConfigError(f"{where}{f', line {line}' if line else ''}: {field}", problem) from None


def _loc(field: str) -> tuple[Any, ...]:
    """``rungs[1].threshold`` as ``("rungs", 1, "threshold")``."""
    parts: list[Any] = []
    for name, index in re.findall(r"([A-Za-z_][\w]*)|\[(\d+)\]", field):
        parts.append(int(index) if index else name)
    return tuple(parts)
