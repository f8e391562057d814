"""Skip a rung the request alone says will fail: the learned pre-router (``pre_router`` rule)."""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from cascade_router.errors import ConfigError
from cascade_router.routing.base import RouteContext, RoutingRule, _fork_safe
from cascade_router.routing.difficulty import DifficultyModel

if TYPE_CHECKING:
    from cascade_router.ladder import RungRuntime

DEFAULT_THRESHOLD = 0.2
"""The threshold when neither the rule nor the model file names one: a rung is skipped only
for requests it answers acceptably less than one time in five."""


class PreRouterAdaptation(BaseModel):
    """Online recalibration of the pre-router from outcomes (off unless given).

    Each observed outcome of a rung the pre-router let through (an escalation is a failure at
    once; an accepted answer's labelled feedback says whether it was right) moves a per-rung bias
    by a bounded step towards the observed residual, ``bias += step * (outcome - (p + bias))``: a
    Robbins-Monro estimate of how far the model's probabilities are off on today's traffic. The
    rung is skipped when ``p + bias < threshold``, so a bias of -0.1 is the threshold moved up by
    0.1. ``explore`` lets a share of would-be-skipped requests through, so the bias also learns
    from the requests the model is least sure of (an epsilon-greedy bandit)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    step: float = Field(default=0.02, gt=0, le=0.5)
    """How far one outcome moves the bias, at most ``step`` (outcomes are 0 or 1)."""
    max_shift: float = Field(default=0.15, gt=0, le=1)
    """The bias stays within +-max_shift: the fitted model keeps most of its say."""
    explore: float = Field(default=0.05, ge=0, le=1)
    """Share of would-be-skipped requests let through to observe them."""
    pending: int = Field(default=10_000, ge=1, le=10_000_000)
    """Accepted answers remembered while their feedback is awaited (the oldest are forgotten)."""
    seed: int | None = None
    """Seed of the exploration draws (for reproducible tests and simulations)."""


class PreRouterRule(RoutingRule):
    """``{kind: pre_router, path: prerouter.json}``: a rung below the last is skipped when the
    learned difficulty model (``cascade-router learn --pre-router``) gives the request a
    probability of being accepted and right there below ``threshold``. The last rung is never
    skipped by it. Fitted with external embeddings, the rule needs them (``embeddings``)."""

    kind: Literal["pre_router"] = "pre_router"
    path: str | None = None
    """The file ``cascade-router learn --pre-router`` wrote."""
    model: Any = None
    """A ``DifficultyModel`` given directly instead of a path."""
    threshold: float | dict[str, float] | None = None
    """Skip below this probability; one value, or one per rung name. None: the threshold the
    model file holds (chosen by ``learn --pre-router``), else 0.2."""
    embeddings: Any = None
    """The LangChain ``Embeddings`` (or ``texts -> vectors`` callable) the model was fitted with,
    when not the default offline hashing."""
    adapt: PreRouterAdaptation | None = None
    """Online recalibration from outcomes and feedback; None: the model's probabilities as fitted."""

    _model: DifficultyModel = PrivateAttr()
    _bias: dict[str, float] = PrivateAttr(default_factory=dict)
    _pending: OrderedDict[str, tuple[str, int, float]] = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _rng: random.Random = PrivateAttr(default_factory=random.Random)

    @model_validator(mode="after")
    def _thresholds(self) -> PreRouterRule:
        values = self.threshold.values() if isinstance(self.threshold, dict) else [self.threshold]
        if any(v is not None and not 0 <= v <= 1 for v in values):
            raise ValueError("threshold must be within [0, 1]")
        return self

    def model_post_init(self, context: Any, /) -> None:
        # Here, not in an "after" validator: pydantic runs this first, and it loads the file.
        if (self.path is None) == (self.model is None):
            raise ValueError("needs exactly one of path (a pre-router file) and model")
        if self.model is not None and not isinstance(self.model, DifficultyModel):
            raise ValueError(f"model must be a DifficultyModel, got {type(self.model).__name__}")
        self._model = self.model if self.model is not None else DifficultyModel.load(str(self.path))
        if self._model.embedder["kind"] == "external" and self.embeddings is None:
            raise ConfigError("embeddings", "this pre-router was fitted with external embeddings: pass them")
        if self.adapt is not None and self.adapt.seed is not None:
            self._rng = random.Random(self.adapt.seed)
        _fork_safe.add(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    # Hashed by identity: a rule holds learned state, and its fields (a model, a dict of
    # thresholds) are not hashable values.
    def __hash__(self) -> int:
        return id(self)

    @property
    def fitted(self) -> DifficultyModel:
        return self._model

    def check_rungs(self, names: Sequence[str], field: str) -> None:
        known = [n for n in self._model.heads if n in names[:-1]]
        if not known:
            raise ConfigError(
                f"{field}.path",
                f"the pre-router predicts rungs {sorted(self._model.heads)}, and none of them is below "
                f"the last rung of {list(names)}: name the rungs as they were named when it was fitted",
            )
        if isinstance(self.threshold, dict):
            for name in self.threshold:
                if name not in names:
                    raise ConfigError(
                        f"{field}.threshold", f"no rung named {name!r}; the rungs are {list(names)}"
                    )

    def threshold_for(self, rung: str) -> float:
        t = self.threshold
        if isinstance(t, dict):
            t = t.get(rung)
        if t is None:
            t = self._model.threshold
        return DEFAULT_THRESHOLD if t is None else t

    def bias(self, rung: str) -> float:
        """What adaptation has learned to add to the model's probability for ``rung``."""
        return self._bias.get(rung, 0.0)

    def predictions(self, ctx: RouteContext) -> dict[str, float]:
        """P(accepted and right) per rung for this request (worked out once per request)."""
        key = id(self)
        found = ctx.memo.get(key)
        if found is None:
            x = self._model.embed([ctx.text], self.embeddings)[0]
            found = ctx.memo[key] = self._model.predict(x)
        return found

    def skip(self, ctx: RouteContext, rung: RungRuntime) -> str | None:
        if rung.index == len(ctx.rungs) - 1 or rung.name not in self._model.heads:
            return None
        p = self.predictions(ctx)[rung.name]
        bias = self._bias.get(rung.name, 0.0)
        threshold = self.threshold_for(rung.name)
        if p + bias >= threshold:
            return None
        adapt = self.adapt
        if adapt is not None and adapt.explore and self._rng.random() < adapt.explore:
            return None  # explored: called anyway, so that its outcome is seen
        shown = f"{p:.3f}" + (f" {bias:+.3f} (adapted)" if bias else "")
        return f"pre-router: P(accepted and right) {shown} < {threshold:g}"

    def finish(self, ctx: RouteContext) -> None:
        if self.adapt is None:
            return
        predictions = ctx.memo.get(id(self))
        if predictions is None:
            return
        awaiting: tuple[str, int, float] | None = None
        for attempt in ctx.attempts:
            name = attempt.name
            if attempt.rung == len(ctx.rungs) - 1 or name not in predictions or attempt.shadow:
                continue
            if attempt.decision == "escalate":
                self.observe(name, predictions[name], False)
            elif attempt.decision == "accept":
                awaiting = (name, attempt.rung, predictions[name])
        if awaiting is not None and ctx.request_id is not None:
            with self._lock:
                self._pending[ctx.request_id] = awaiting
                while len(self._pending) > self.adapt.pending:
                    self._pending.popitem(last=False)

    def feedback(self, request_id: str, good: bool, rung: int | None = None) -> None:
        """Labelled feedback on a request's answer: teaches the bias of the rung that gave it (a
        label for another rung's answer, from a shadow comparison, is not about this one)."""
        if self.adapt is None:
            return
        with self._lock:
            awaiting = self._pending.get(request_id)
            if awaiting is None or (rung is not None and rung != awaiting[1]):
                return
            del self._pending[request_id]
        name, _, p = awaiting
        self.observe(name, p, good)

    def observe(self, rung: str, p: float, success: bool) -> None:
        """One outcome of ``rung`` for a request the model gave probability ``p``."""
        adapt = self.adapt
        if adapt is None:
            return
        with self._lock:
            bias = self._bias.get(rung, 0.0)
            bias += adapt.step * ((1.0 if success else 0.0) - (p + bias))
            self._bias[rung] = max(-adapt.max_shift, min(adapt.max_shift, bias))
