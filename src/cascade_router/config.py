"""Typed configuration of a ladder, loadable from YAML, TOML, JSON or a dict.

```yaml
name: support-bot
rungs:
  - model: openai:gpt-5-nano
    scorer: {kind: logprob, aggregate: mean}
    threshold: 0.85
  - model: anthropic:claude-opus-4-6
```
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cascade_router.errors import ConfigError
from cascade_router.policy import OnExhausted, OnMissing, OnToolCall
from cascade_router.pricing import Price
from cascade_router.scorers import Scorer, parse_scorer


class Rung(BaseModel):
    """One model of the ladder and the rule for accepting its answers."""

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, frozen=True, use_attribute_docstrings=True
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
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds to wait for the whole answer (for a rung streaming to the caller: for its first
    chunk); past it the attempt is an error and the ladder falls back."""
    price: Price | None = None
    """Price per million tokens; overrides the `genai-prices` catalog."""
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
    max_retries: int = Field(default=0, ge=0)
    """Retries of this rung on an error before falling back to the next one. Provider clients
    usually retry on their own; this is for those that do not."""
    context_window: int | None = Field(default=None, gt=0)
    """The model's context window in tokens, when known; informational."""

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


class LadderSettings(BaseModel):
    """Ladder-wide behaviour shared by every adapter."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    on_exhausted: OnExhausted = "raise"
    """When no rung is accepted: ``raise`` a ``CascadeExhaustedError`` holding every attempt's
    error, or return the ``best``-scored answer."""
    accept_last: bool = True
    """Accept the final rung's answer without checking its threshold."""
    annotate: bool = False
    """Append a visible "answered by <model>" line to the answer, for products that show it."""


class LadderConfig(LadderSettings):
    """A whole ladder, as loaded from a file or a dict."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True)

    name: str = "cascade"
    """Name of the cascade in traces and logs."""
    rungs: list[Rung]
    """The models, cheapest first."""

    def adapter_fields(self) -> dict[str, Any]:
        """The fields every adapter takes under these names (the cascade's name each adapter
        names its own way)."""
        return {
            "rungs": self.rungs,
            "on_exhausted": self.on_exhausted,
            "accept_last": self.accept_last,
            "annotate": self.annotate,
        }

    @model_validator(mode="after")
    def _check(self) -> LadderConfig:
        check_ladder(self.rungs, accept_last=self.accept_last)
        return self


def as_rungs(value: Any) -> list[Rung]:
    """Rungs from a list of ``Rung`` objects and dicts; errors name ``rungs[i]``."""
    if not isinstance(value, list | tuple):
        raise ConfigError("rungs", f"expected a list of rungs, got {type(value).__name__}")
    rungs = []
    for i, item in enumerate(value):
        if isinstance(item, Rung):
            rungs.append(item)
        elif isinstance(item, Mapping):
            try:
                rungs.append(Rung.model_validate(dict(item)))
            except ValueError as exc:
                raise ConfigError(f"rungs[{i}]", str(exc)) from exc
        else:
            raise ConfigError(f"rungs[{i}]", f"expected a Rung or a dict, got {type(item).__name__}")
    return rungs


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
    """The raw mapping in a YAML, TOML or JSON file."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    data: Any
    if suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif suffix == ".toml":
        data = tomllib.loads(text)
    elif suffix == ".json":
        data = json.loads(text)
    else:
        raise ConfigError(str(path), "unknown config format; use .yaml, .yml, .toml or .json")
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the file must hold a mapping with a 'rungs' list")
    for rung in data.get("rungs") or []:
        if isinstance(rung, dict):
            _resolve_paths(rung.get("scorer"), p.parent)
    return data


def _resolve_paths(scorer: Any, base: Path) -> None:
    """Scorer files named in a config file are relative to that file, not to the working folder."""
    if not isinstance(scorer, dict):
        return
    path = scorer.get("path")
    if isinstance(path, str) and not Path(path).is_absolute():
        scorer["path"] = str((base / path).resolve())
    for inner in scorer.get("scorers") or []:
        _resolve_paths(inner, base)


def load_config(source: str | Path | Mapping[str, Any]) -> LadderConfig:
    """A ``LadderConfig`` from a file path or a mapping."""
    data = dict(source) if isinstance(source, Mapping) else read_config_file(source)
    return LadderConfig.model_validate(data)
