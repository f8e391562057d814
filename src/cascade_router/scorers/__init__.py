"""Scorers: how confident the cascade can be in an answer.

Built-in kinds, selectable by ``kind`` in configuration: ``logprob``, ``judge``, ``validity``,
``first_available``; ``callable`` wraps a Python function. ``register_scorer`` adds a kind.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from cascade_router.errors import ConfigError
from cascade_router.scorers.base import PrefixCheck, Score, Scorer, ScoringContext
from cascade_router.scorers.function import CallableScorer, FirstAvailableScorer
from cascade_router.scorers.judge import JudgeScorer, read_verdict
from cascade_router.scorers.logprob import LogprobScorer
from cascade_router.scorers.validity import ValidityScorer, structural_problem

SCORER_KINDS: dict[str, type[Scorer]] = {
    "logprob": LogprobScorer,
    "judge": JudgeScorer,
    "validity": ValidityScorer,
    "first_available": FirstAvailableScorer,
}


def _learned() -> type[Scorer]:
    # Imported on use: the learned scorer's module is larger than the rest and rarely needed.
    from cascade_router.scorers.learned import LearnedScorer

    return LearnedScorer


def register_scorer(kind: str, cls: type[Scorer]) -> None:
    """Make ``{kind: <kind>, ...}`` in configuration build ``cls``."""
    SCORER_KINDS[kind] = cls


def parse_scorer(value: Any, *, field: str = "scorer") -> Scorer | None:
    """A scorer from configuration: None, a ``Scorer``, a ``{kind: ...}`` dict or a function."""
    if value is None or isinstance(value, Scorer):
        return value
    if isinstance(value, dict):
        spec = dict(value)
        kind = spec.pop("kind", None)
        if kind is None:
            raise ConfigError(field, f"needs a 'kind', one of {sorted(SCORER_KINDS)}")
        cls = SCORER_KINDS.get(kind) or (_learned() if kind == "learned" else None)
        if cls is None:
            raise ConfigError(f"{field}.kind", f"unknown scorer kind {kind!r}; known: {sorted(SCORER_KINDS)}")
        try:
            return cls(**spec)
        except ValidationError as exc:
            raise ConfigError(field, _first_error(exc)) from exc
    if callable(value):
        return CallableScorer(fn=value)
    raise ConfigError(
        field, f"expected a Scorer, a {{kind: ...}} mapping or a function, got {type(value).__name__}"
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


__all__ = [
    "SCORER_KINDS",
    "CallableScorer",
    "FirstAvailableScorer",
    "JudgeScorer",
    "LogprobScorer",
    "PrefixCheck",
    "Score",
    "Scorer",
    "ScoringContext",
    "ValidityScorer",
    "parse_scorer",
    "read_verdict",
    "register_scorer",
    "structural_problem",
]
