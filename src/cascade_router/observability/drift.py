"""Noticing live traffic that no longer looks like the data a threshold was calibrated on.

A calibrated threshold keeps its promise only while requests look like the calibration data.
``cascade-router calibrate`` writes, on the rung it calibrated, a ``calibration`` reference: the
deciles of the scores it saw and the share of answers the threshold accepted there. Live, each
scored answer of that rung goes into a rolling window (``window`` answers); once the window is
full, every ``window / 5`` answers it is compared with the reference:

- the **population stability index** (PSI) of the window's scores over the reference's ten
  decile bins: ``sum((o - e) * ln(o / e))`` with ``e = 0.1`` per bin and ``o`` the window's
  share (0.5 / window where a bin is empty). Conventional reading: below 0.1 stable, 0.1-0.25 a
  shift worth watching, above 0.25 a shift (``psi_alert``, 0.25 by default);
- the **accepted share**: the window's share of answers at or above the threshold against the
  calibration's (an alert when they differ by more than ``share_alert``, 0.10 by default).

Both must also exceed what the window's own sampling noise explains (a PSI above
``27.9 / window``, the 99.9 % point of its chi-squared null; a share more than three standard
errors away), so a small window does not cry wolf.

Past either, a warning is logged (at most once per rung per ``interval`` seconds), the
``cascade.drift.alerts`` counter is incremented, and the attempt's rung span gets a
``cascade.drift`` event. ``cascade-router log drift`` runs the same comparison over the decision
log after the fact.
"""

from __future__ import annotations

import bisect
import collections
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cascade_router.observability import metrics

_log = logging.getLogger("cascade_router.drift")


def decile_edges(scores: Sequence[float]) -> list[float]:
    """The nine inner cut points that split ``scores`` into ten equal shares."""
    ordered = sorted(scores)
    if not ordered:
        raise ValueError("no scores to take deciles of")
    n = len(ordered)
    return [ordered[min(n - 1, (k * n) // 10)] for k in range(1, 10)]


def psi(edges: Sequence[float], scores: Iterable[float]) -> float:
    """Population stability index of ``scores`` against ten equal-share bins cut at ``edges``."""
    counts = [0] * (len(edges) + 1)
    total = 0
    for s in scores:
        counts[bisect.bisect_right(edges, s)] += 1
        total += 1
    if total == 0:
        return 0.0
    expected = 1.0 / len(counts)
    value = 0.0
    for c in counts:
        observed = max(c, 0.5) / total
        value += (observed - expected) * math.log(observed / expected)
    return value


CHI2_9_999 = 27.877
"""The 99.9 % point of a chi-squared distribution with 9 degrees of freedom: n times the PSI of n
draws from the reference itself stays below it 999 times in 1000 (ten bins, so 9 degrees)."""


@dataclass(frozen=True)
class DriftCheck:
    """One comparison of live answers with a rung's calibration data."""

    rung: str
    answers: int
    psi: float
    accepted_share: float
    calibration_accepted_share: float
    drifted: bool
    why: str

    def as_attributes(self) -> dict[str, Any]:
        return {
            "cascade.rung.name": self.rung,
            "cascade.drift.psi": self.psi,
            "cascade.drift.accepted_share": self.accepted_share,
            "cascade.drift.calibration_accepted_share": self.calibration_accepted_share,
            "cascade.drift.answers": self.answers,
            "cascade.drift.reason": self.why,
        }


def compare(
    rung: str,
    edges: Sequence[float],
    calibration_accepted_share: float,
    scores: Sequence[float],
    accepted: Sequence[bool],
    *,
    psi_alert: float,
    share_alert: float,
) -> DriftCheck:
    value = psi(edges, scores)
    n = max(1, len(scores))
    share = sum(accepted) / len(accepted) if accepted else 0.0
    # A window of n answers from the calibration distribution itself shows a PSI of about
    # chi2(9) / n and an accepted share within a few standard errors: only a difference beyond
    # that noise, as well as beyond the configured alert levels, counts.
    noise_psi = CHI2_9_999 / n
    p = calibration_accepted_share
    noise_share = 3 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    reasons = []
    if value > max(psi_alert, noise_psi):
        reasons.append(f"score PSI {value:.3f} > {max(psi_alert, noise_psi):.3f}")
    if abs(share - calibration_accepted_share) > max(share_alert, noise_share):
        reasons.append(
            f"accepted share {share:.1%} vs {calibration_accepted_share:.1%} at calibration "
            f"(more than {share_alert:.0%} apart)"
        )
    return DriftCheck(
        rung,
        len(scores),
        value,
        share,
        calibration_accepted_share,
        bool(reasons),
        "; ".join(reasons) or "stable",
    )


def _alerts() -> Any:
    return metrics.counter(
        "cascade.drift.alerts",
        "{check}",
        "Comparisons of live scores with a rung's calibration data that found a shift",
    )


class DriftWatch:
    """Per calibrated rung, a rolling window of live scores compared with the calibration's."""

    def __init__(self, cascade: str, *, interval: float = 600.0) -> None:
        self.cascade = cascade
        self.interval = interval
        self._lock = threading.Lock()
        self._windows: dict[str, collections.deque[tuple[float, bool]]] = {}
        self._seen: dict[str, int] = {}
        self._warned_at: dict[str, float] = {}

    def observe(self, rung: str, calibration: Any, score: float, accepted: bool) -> DriftCheck | None:
        """Add one scored answer; the check's result when one ran and found a shift, else None.
        Never raises: drift watching must not break a request."""
        try:
            return self._observe(rung, calibration, score, accepted)
        except Exception:  # telemetry never breaks a request
            return None

    def _observe(self, rung: str, calibration: Any, score: float, accepted: bool) -> DriftCheck | None:
        window = calibration.window
        with self._lock:
            values = self._windows.get(rung)
            if values is None or values.maxlen != window:
                values = self._windows[rung] = collections.deque(maxlen=window)
            values.append((score, accepted))
            seen = self._seen[rung] = self._seen.get(rung, 0) + 1
            if len(values) < window or seen % max(1, window // 5):
                return None
            snapshot = list(values)
        check = compare(
            rung,
            calibration.score_edges,
            calibration.accepted_share,
            [s for s, _ in snapshot],
            [a for _, a in snapshot],
            psi_alert=calibration.psi_alert,
            share_alert=calibration.share_alert,
        )
        if not check.drifted:
            return None
        metrics.add(_alerts(), 1, {"cascade.name": self.cascade, "cascade.rung.name": rung})
        now = time.monotonic()
        with self._lock:
            if now - self._warned_at.get(rung, -math.inf) < self.interval:
                return check
            self._warned_at[rung] = now
        _log.warning(
            "cascade %r: rung %r's last %d scored answers no longer look like its calibration data "
            "(%s): its threshold's guarantee may not hold; record and label recent traffic, then "
            "calibrate again (docs/tuning.md)",
            self.cascade,
            rung,
            check.answers,
            check.why,
        )
        return check
