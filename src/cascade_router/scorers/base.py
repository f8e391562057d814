"""The scorer contract: ``Score``, ``Scorer`` and what a scorer may call (``ScoringContext``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from cascade_router.model_io import ModelOutput, Request

if TYPE_CHECKING:
    from cascade_router.pricing import Price


@dataclass(frozen=True, slots=True)
class Score:
    """A confidence in [0, 1] that an answer is good enough, or the reason there is none."""

    value: float | None
    method: str
    """logprob, judge, validity, learned, callable, ..."""
    details: Mapping[str, Any] = field(default_factory=dict)
    missing: str | None = None
    """Why ``value`` is None: the signal the scorer needs was not in the answer."""

    @classmethod
    def missing_signal(cls, method: str, reason: str, **details: Any) -> Score:
        return cls(None, method, details, missing=reason)


@dataclass(frozen=True, slots=True)
class PrefixCheck:
    """What a scorer can tell from the start of an answer (``Scorer.score_prefix``)."""

    score: float | None
    """The scorer's value on the answer so far; None when it has none yet."""
    hopeless: str | None = None
    """Set when, by the scorer's own rule, the finished answer cannot be accepted whatever
    follows (the least likely token so far is already below a ``min`` threshold; a stated
    calculation is already wrong): why."""


def as_probability(value: object) -> float | None:
    """``value`` as a float in [0, 1], or None when it is not one.

    Any real number counts (``float``, ``int``, numpy scalars and 0-d arrays, ``Decimal``,
    ``Fraction``); booleans and NaN do not: a scorer that returns ``True`` has a bug, not a
    confidence of 1.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    # numpy 0-d arrays are not registered as numbers.Real, but convert exactly.
    if not isinstance(value, numbers.Real | Decimal) and (
        getattr(value, "shape", None) != () or not hasattr(value, "__float__")
    ):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        return None
    return number


class ScoringContext(Protocol):
    """Model calls a scorer may make; the engine counts their tokens and cost on the attempt."""

    def invoke(self, model: Any | None, request: Request, *, price: Price | None = None) -> ModelOutput:
        """Call ``model`` (None: the rung's own model) with ``request``."""
        ...

    async def ainvoke(
        self, model: Any | None, request: Request, *, price: Price | None = None
    ) -> ModelOutput: ...


class Scorer(BaseModel):
    """Base of every scorer. Subclass it, set ``kind``, implement ``score`` (and ``ascore`` if
    scoring does I/O).

    Scorers are pydantic models so that a YAML ``scorer: {kind: logprob, aggregate: min}`` and
    ``LogprobScorer(aggregate="min")`` build the same object.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        use_attribute_docstrings=True,
        hide_input_in_errors=True,
    )

    method: ClassVar[str] = "callable"
    """The ``Score.method`` this scorer reports."""

    def models(self) -> list[Any]:
        """Model references this scorer calls (judges), so adapters can resolve them up front."""
        return []

    def needs_logprobs(self) -> bool:
        """True when this scorer can never give a value without the answer's logprobs, so that a
        ladder can refuse it on a model that returns none."""
        return False

    def score(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        raise NotImplementedError

    async def ascore(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        # CPU-only scorers are fast enough to run inline on the event loop.
        return self.score(request, output, ctx)

    def score_prefix(self, request: Request, partial: ModelOutput, threshold: float) -> PrefixCheck | None:
        """Judge an answer while it is generated (the ``early_abort`` streaming mode).

        ``partial`` holds the text (and the logprobs, where the provider streams them) so far.
        None: this scorer cannot judge a partial answer, and the rung is scored whole. Must be
        cheap and free of I/O: it runs every few chunks.
        """
        return None
