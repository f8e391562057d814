"""Choosing thresholds from evaluation data.

Best-effort: pick the thresholds that meet a target on a calibration split, scored by the same
policy simulation as ``evaluation``:

- ``quality=0.95``: quality at least 95 % of the strongest rung's, at the lowest cost;
- ``escalation=0.3``: the best quality with at most 30 % of requests escalated past the first rung;
- ``cost=0.002``: the best quality at a mean cost of at most $0.002 per request.

Guaranteed (``loss=ε`` with ``guaranteed=True``): Learn-then-Test (Angelopoulos et al., 2021) on
the first rung's threshold. The loss of an item is how much worse the cascade's answer is than the
strongest rung's (0 when it is as good or better; qualities scaled to [0, 1]). Candidates are
tested from the most conservative (escalate everything: no loss) down, each with a Hoeffding
p-value for "mean loss exceeds ε"; testing stops at the first candidate it cannot reject. With
probability at least 1 - δ over the calibration data, the chosen threshold's expected loss, and so
its expected quality shortfall against always using the strongest rung, is at most ε.
``tests/test_evaluation.py`` checks that rate by simulation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from cascade_router.engine import Engine
from cascade_router.errors import ConfigError
from cascade_router.evaluation.metrics import ItemProbe, Outcome, Point, simulate, summarize

TargetKind = Literal["quality", "escalation", "cost", "loss"]


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    value: float

    @classmethod
    def parse(cls, text: str) -> Target:
        """``quality=0.95``, ``escalation=0.3``, ``cost=0.002`` or ``loss=0.03``."""
        kind, sep, value = text.partition("=")
        if not sep or kind not in ("quality", "escalation", "cost", "loss"):
            raise ConfigError("target", f"{text!r}: expected quality=F, escalation=F, cost=USD or loss=F")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError("target", f"{text!r}: {value!r} is not a number") from None
        if number < 0 or (kind != "cost" and number > 1):
            raise ConfigError("target", f"{text!r}: out of range")
        return cls(kind, number)  # type: ignore[arg-type]


@dataclass
class Choice:
    thresholds: list[float]
    """One per rung with a scorer, first rung first."""
    point: Point
    escalation_rate: float
    met: bool
    """Whether the target was met on the calibration data."""


def escalation_rate(outcomes: Sequence[Outcome]) -> float:
    return sum(o.rungs_called > 1 for o in outcomes) / len(outcomes)


def _candidates(probes: Sequence[ItemProbe], rung: int, limit: int) -> list[float]:
    scores = sorted({s for p in probes if (s := p.attempts[rung].score) is not None})
    if not scores:
        return [0.0]
    if len(scores) > limit:
        scores = [scores[round(i * (len(scores) - 1) / (limit - 1))] for i in range(limit)]
    # 0 accepts every scored answer; just above the largest escalates them all
    return sorted({0.0, *scores, min(1.0, scores[-1] + 1e-9)})


def choose(engine: Engine, probes: Sequence[ItemProbe], target: Target) -> Choice:
    """The thresholds that meet ``target`` on ``probes`` best (see the module docstring)."""
    scored = [i for i, r in enumerate(engine.rungs[:-1]) if r.scorer is not None]
    if not scored:
        raise ConfigError("rungs", "nothing to calibrate: no rung before the last has a scorer")
    if target.kind == "loss":
        raise ConfigError("target", "loss= is for the guaranteed mode")
    limit = 400 if len(scored) == 1 else 40
    grids = [_candidates(probes, i, limit) for i in scored]
    strongest = sum(p.qualities[-1] for p in probes) / len(probes)
    best: tuple[tuple[float, ...], Choice] | None = None
    for combo in itertools.product(*grids):
        thresholds: list[float | None] = [None] * len(engine.rungs)
        for i, t in zip(scored, combo, strict=True):
            thresholds[i] = t
        outcomes = simulate(engine, probes, thresholds)
        point = summarize(outcomes, len(engine.rungs))
        esc = escalation_rate(outcomes)
        cost = point.cost_usd if point.cost_usd is not None else point.strong_share
        if target.kind == "quality":
            met = point.quality >= target.value * strongest
            key = (0.0 if met else 1.0, cost if met else -point.quality, esc)
        elif target.kind == "escalation":
            met = esc <= target.value
            key = (0.0 if met else 1.0, -point.quality if met else esc, cost)
        else:
            if point.cost_usd is None:
                raise ConfigError("target", "cost= needs known prices for every rung")
            met = point.cost_usd <= target.value
            key = (0.0 if met else 1.0, -point.quality if met else point.cost_usd, esc)
        if best is None or key < best[0]:
            best = (key, Choice(list(combo), point, esc, met))
    assert best is not None
    return best[1]


def hoeffding_p(risk: float, epsilon: float, n: int, loss_range: float) -> float:
    """P-value of "true mean loss > ε" given a sample mean ``risk`` of n losses in a range."""
    if risk >= epsilon:
        return 1.0
    return math.exp(-2 * n * (epsilon - risk) ** 2 / loss_range**2)


def learn_then_test(
    candidates_conservative_first: Sequence[float],
    losses: Callable[[float], Sequence[float]],
    *,
    epsilon: float,
    delta: float,
    loss_range: float,
) -> float | None:
    """The last candidate that fixed-sequence testing certifies, or None if not even the first.

    ``losses(t)`` gives each calibration item's loss at threshold t."""
    chosen = None
    for t in candidates_conservative_first:
        sample = losses(t)
        p = hoeffding_p(sum(sample) / len(sample), epsilon, len(sample), loss_range)
        if p > delta:
            break
        chosen = t
    return chosen


def guaranteed(engine: Engine, probes: Sequence[ItemProbe], *, epsilon: float, delta: float) -> Choice:
    """Learn-then-Test on the first rung's threshold: with probability >= 1 - δ, the mean quality
    loss against always using the strongest rung is at most ε (qualities scaled to [0, 1])."""
    if engine.rungs[0].scorer is None:
        raise ConfigError("rungs[0].scorer", "the guaranteed mode calibrates the first rung's threshold")
    qualities = [q for p in probes for q in p.qualities]
    lo, hi = min(qualities), max(qualities)
    span = (hi - lo) or 1.0
    candidates = sorted(_candidates(probes, 0, 400), reverse=True)

    def losses(t: float) -> list[float]:
        # One-sided, in [0, 1]: only items the cascade answers worse than the strongest rung.
        # Bounding its mean bounds the mean quality loss too, and the range of 1 (not 2) keeps
        # Hoeffding's bound usable on a few hundred items.
        outcomes = simulate(engine, probes, [t])
        return [max(0.0, p.qualities[-1] - o.quality) / span for p, o in zip(probes, outcomes, strict=True)]

    t = learn_then_test(candidates, losses, epsilon=epsilon, delta=delta, loss_range=1.0)
    if t is None:
        raise ConfigError(
            "target",
            f"not even escalating everything can be certified with {len(probes)} items at "
            f"ε={epsilon}, δ={delta}: use more calibration data or a larger ε",
        )
    outcomes = simulate(engine, probes, [t])
    return Choice([t], summarize(outcomes, len(engine.rungs)), escalation_rate(outcomes), True)
