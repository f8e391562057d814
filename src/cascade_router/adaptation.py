"""Rung thresholds that move with labelled feedback (``adapt_thresholds``; off by default).

The rule is adaptive conformal inference's update (Gibbs and Candes, "Adaptive Conformal
Inference Under Distribution Shift", NeurIPS 2021) applied to a rung's threshold: each labelled
answer the rung accepted moves its threshold by ``step * (wrong - target_error)``. Wrong answers
push it up by ``step * (1 - target_error)``, right ones pull it down by ``step * target_error``,
so it settles where a ``target_error`` share of accepted answers is wrong, and follows the
traffic when that share drifts. It stays within ``max_move`` of the configured threshold and
never goes below a threshold calibrated with a guarantee (``calibrate --guaranteed``).

State is per process (each replica adapts to the feedback it is given).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from cascade_router.routing.base import _fork_safe

if TYPE_CHECKING:
    from cascade_router.attempts import Attempt
    from cascade_router.ladder import RungRuntime


class ThresholdAdaptation(BaseModel):
    """``adapt_thresholds: {target_error: 0.1}``: move each scored rung's threshold with
    labelled feedback (``record_feedback``) on the answers it accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    target_error: float = Field(gt=0, lt=1)
    """The share of a rung's accepted answers allowed to be wrong (labelled below ``good_at``)."""
    step: float = Field(default=0.01, gt=0, le=0.2)
    """Learning rate: one label moves a threshold by at most this much."""
    max_move: float = Field(default=0.1, gt=0, le=1)
    """A threshold stays within +-max_move of the configured one."""
    good_at: float = Field(default=0.5, ge=0, le=1)
    """A label (in [0, 1]) at or above this counts as right."""
    pending: int = Field(default=10_000, ge=1, le=10_000_000)
    """Accepted answers remembered while their feedback is awaited (the oldest are forgotten)."""


class ThresholdAdapter:
    """The moving thresholds of one ladder, and the accepted answers awaiting labels."""

    def __init__(self, settings: ThresholdAdaptation, rungs: Sequence[RungRuntime]) -> None:
        self.settings = settings
        last = len(rungs) - 1
        self._start = {r.index: r.threshold for r in rungs if r.threshold is not None and r.index < last}
        self._now = dict(self._start)
        self._low: dict[int, float] = {}
        self._high: dict[int, float] = {}
        for r in rungs:
            t = self._start.get(r.index)
            if t is None:
                continue
            guaranteed = r.calibration is not None and r.calibration.guaranteed
            # A threshold calibrated with a guarantee is a floor: lower, the guarantee is void.
            self._low[r.index] = t if guaranteed else max(0.0, t - settings.max_move)
            self._high[r.index] = min(1.0, t + settings.max_move)
        self._pending: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        _fork_safe.add(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def threshold(self, rung: int) -> float | None:
        """The rung's threshold now (None: the rung has none, or is not adapted)."""
        return self._now.get(rung)

    def thresholds(self) -> dict[int, float]:
        with self._lock:
            return dict(self._now)

    def remember(self, request_id: str, attempts: Sequence[Attempt]) -> None:
        """Note which adapted rung accepted the request's answer, for its feedback."""
        for attempt in attempts:
            if attempt.decision == "accept" and attempt.rung in self._now and not attempt.shadow:
                with self._lock:
                    self._pending[request_id] = attempt.rung
                    while len(self._pending) > self.settings.pending:
                        self._pending.popitem(last=False)
                return

    def feedback(self, request_id: str, quality: float, rung: int | None = None) -> bool:
        """Move the threshold of the rung that answered ``request_id``; False when the request is
        not one an adapted rung answered (or was forgotten). A label for another rung's answer
        (``rung``, from shadow comparisons) teaches nothing here."""
        with self._lock:
            answered = self._pending.get(request_id)
            if answered is None or (rung is not None and rung != answered):
                return False
            del self._pending[request_id]
            s = self.settings
            wrong = 1.0 if quality < s.good_at else 0.0
            moved = self._now[answered] + s.step * (wrong - s.target_error)
            self._now[answered] = min(self._high[answered], max(self._low[answered], moved))
            return True
