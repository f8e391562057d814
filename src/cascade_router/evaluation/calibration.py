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
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cascade_router.engine import Engine
from cascade_router.errors import ConfigError
from cascade_router.evaluation import bounds
from cascade_router.evaluation.bounds import BoundKind
from cascade_router.evaluation.metrics import Interval, ItemProbe, Outcome, Point, simulate, summarize

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
    certificate: Certificate | None = None
    """The guaranteed mode's certificate; None in the plain mode."""


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


class GuaranteeError(ConfigError):
    """The guaranteed mode cannot certify anything useful on this calibration data."""


@dataclass(frozen=True)
class Certificate:
    """What the guaranteed mode certified, on the calibration data."""

    epsilon: float
    """The certified bound on the expected loss (qualities scaled to [0, 1])."""
    delta: float
    """The probability, over calibration data, that the bound is wrong."""
    bound: BoundKind
    items: int
    certified_loss: float
    """An upper confidence bound (level δ) on the chosen threshold's expected loss: at most ε."""
    floor: float
    """The smallest ε this data could certify at all (escalating every request)."""
    never_escalate_loss: float
    """The mean loss of never escalating, on the calibration data."""

    @property
    def warning(self) -> str | None:
        """Set when ε is no smaller than never escalating's loss on the same data: the guarantee
        then promises nothing that never escalating does not seem to deliver already."""
        if self.epsilon < self.never_escalate_loss:
            return None
        return (
            f"ε={self.epsilon:.4f} is no smaller than the loss of never escalating on this data "
            f"({self.never_escalate_loss:.4f}): the guarantee is weaker than it looks; choose a "
            "smaller ε or label more items"
        )


def learn_then_test(
    candidates_conservative_first: Sequence[float],
    losses: Callable[[float], Sequence[float]],
    *,
    epsilon: float,
    delta: float,
    low: float = -1.0,
    high: float = 1.0,
    bound: BoundKind = "betting",
) -> float | None:
    """The last candidate that fixed-sequence testing certifies, or None if not even the first.

    ``losses(t)`` gives each calibration item's loss at threshold t, within ``[low, high]``.
    Fixed-sequence testing needs no multiple-testing correction: candidates are tested in an
    order fixed before looking at the data (most conservative first) and testing stops at the
    first that is not rejected, so the chance of certifying any bad candidate is at most δ."""
    chosen = None
    for t in candidates_conservative_first:
        p = bounds.p_value(bound, losses(t), epsilon, low=low, high=high, delta=delta)
        if p > delta:
            break
        chosen = t
    return chosen


def guaranteed(
    engine: Engine,
    probes: Sequence[ItemProbe],
    *,
    epsilon: float,
    delta: float,
    bound: BoundKind = "betting",
) -> Choice:
    """Learn-then-Test on the first rung's threshold: with probability >= 1 - δ over the
    calibration data, the expected quality loss against always using the strongest rung is at
    most ε (qualities scaled to [0, 1]).

    The loss is signed: an item the cascade answers better than the strongest rung counts in its
    favour, as it does in the mean quality the guarantee is about. Raises ``GuaranteeError`` when
    the data cannot certify ε even for escalating everything, or when the smallest ε it can
    certify is no better than never escalating (the guarantee would be empty)."""
    if engine.rungs[0].scorer is None:
        raise ConfigError("rungs[0].scorer", "the guaranteed mode calibrates the first rung's threshold")
    qualities = [q for p in probes for q in p.qualities]
    lo, hi = min(qualities), max(qualities)
    span = (hi - lo) or 1.0
    candidates = sorted(_candidates(probes, 0, 400), reverse=True)

    simulated: dict[float, list[Outcome]] = {}  # the floor, the test and the choice reuse them

    def outcomes_at(t: float) -> list[Outcome]:
        if t not in simulated:
            simulated[t] = simulate(engine, probes, [t])
        return simulated[t]

    def losses(t: float) -> list[float]:
        return [(p.qualities[-1] - o.quality) / span for p, o in zip(probes, outcomes_at(t), strict=True)]

    floor = bounds.upper_bound(bound, losses(candidates[0]), low=-1.0, high=1.0, delta=delta)
    never = losses(0.0)
    never_loss = sum(never) / len(never)
    n = len(probes)
    if floor >= never_loss:
        raise GuaranteeError(
            "target",
            f"with {n} calibration items the smallest loss this data can certify at δ={delta} is "
            f"{floor:.4f}, no better than never escalating ({never_loss:.4f} on the same items): "
            "a guarantee would be empty. Label more items, or use the plain mode (quality=...)",
        )
    t = learn_then_test(candidates, losses, epsilon=epsilon, delta=delta, bound=bound)
    if t is None:
        raise GuaranteeError(
            "target",
            f"not even escalating everything can be certified with {n} items at ε={epsilon}, "
            f"δ={delta} (the smallest certifiable ε here is {floor:.4f}): use more calibration "
            "data or a larger ε",
        )
    certified = bounds.upper_bound(bound, losses(t), low=-1.0, high=1.0, delta=delta)
    outcomes = outcomes_at(t)
    certificate = Certificate(epsilon, delta, bound, n, min(certified, epsilon), floor, never_loss)
    return Choice([t], summarize(outcomes, len(engine.rungs)), escalation_rate(outcomes), True, certificate)


@dataclass(frozen=True)
class HeldOut:
    """Chosen thresholds measured on data they were not chosen on, each figure with a 95 %
    percentile-bootstrap interval over items."""

    items: int
    quality: Interval
    """Mean quality of the cascade's answers, on the dataset's own scale."""
    versus_last: Interval
    """Quality as a share of always using the last rung's."""
    versus_first: Interval
    """Quality as a share of the first rung alone's."""
    escalation: Interval
    """Share of requests sent past the first rung."""
    cost_usd: Interval | None
    """Mean cost per request; None when a price is unknown."""
    cost_versus_last: Interval | None
    """Mean cost as a share of always using the last rung's; None when a price is unknown or the
    last rung costs nothing."""

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (None if v is None else v.__dict__ if isinstance(v, Interval) else v)
            for k, v in self.__dict__.items()
        }


def held_out(
    engine: Engine,
    probes: Sequence[ItemProbe],
    thresholds: Sequence[float | None],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> HeldOut:
    """How ``thresholds`` do on ``probes`` against the first and last rungs alone."""
    outcomes = simulate(engine, probes, thresholds)
    n = len(probes)
    quality = [o.quality for o in outcomes]
    last = [p.qualities[-1] for p in probes]
    first = [p.qualities[0] for p in probes]
    escalated = [float(o.rungs_called > 1) for o in outcomes]
    costs = [o.cost_usd for o in outcomes]
    last_costs = [p.attempts[-1].total_cost_usd for p in probes]
    priced = all(c is not None for c in costs) and all(c is not None for c in last_costs)
    cost = [c or 0.0 for c in costs]
    last_cost = [c or 0.0 for c in last_costs]

    def ratio(num: Sequence[float], den: Sequence[float], idx: Sequence[int]) -> float:
        d = sum(den[i] for i in idx)
        return sum(num[i] for i in idx) / d if d else float("nan")

    def mean(values: Sequence[float], idx: Sequence[int]) -> float:
        return sum(values[i] for i in idx) / len(idx)

    figures: dict[str, Callable[[Sequence[int]], float]] = {
        "quality": lambda idx: mean(quality, idx),
        "versus_last": lambda idx: ratio(quality, last, idx),
        "versus_first": lambda idx: ratio(quality, first, idx),
        "escalation": lambda idx: mean(escalated, idx),
    }
    if priced:
        figures["cost_usd"] = lambda idx: mean(cost, idx)
        if sum(last_cost) > 0:
            figures["cost_versus_last"] = lambda idx: ratio(cost, last_cost, idx)
    rng = random.Random(seed)
    everything = range(n)
    samples: dict[str, list[float]] = {k: [] for k in figures}
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in everything]
        for k, f in figures.items():
            samples[k].append(f(idx))
    intervals: dict[str, Interval | None] = {"cost_usd": None, "cost_versus_last": None}
    for k, f in figures.items():
        values = sorted(v for v in samples[k] if not math.isnan(v))
        point = f(everything)
        if not values:
            intervals[k] = Interval(point, point, point)
            continue
        intervals[k] = Interval(
            point, values[int(0.025 * len(values))], values[min(len(values) - 1, int(0.975 * len(values)))]
        )
    return HeldOut(n, **intervals)  # type: ignore[arg-type]
