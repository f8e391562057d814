"""P-values for "the mean loss exceeds ε", the tests Learn-then-Test chains.

A calibration certifies a threshold by rejecting, at level δ, the hypothesis that its expected
loss is above ε. Two valid tests for losses bounded in ``[low, high]``:

- **betting** (the default; Waudby-Smith & Ramdas, "Estimating means of bounded random variables
  by betting", JRSS-B 2024): a gambler bets against the hypothesis one item at a time; under the
  hypothesis its wealth is a nonnegative supermartingale with expectation at most 1, so by Markov's
  inequality a final wealth of ``1/δ`` happens with probability at most δ. Its bets are sized from
  the variance seen so far, so a loss that is mostly 0 (the cascade answers as the strongest rung
  would) costs little slack, where Hoeffding's bound pays for the whole range whatever the
  variance. By Ville's inequality the wealth reaches ``1/δ`` *at any point* with probability at
  most δ, so the test rejects as soon as it does. Items are bet on in a seeded random order (the
  order must not depend on the losses).
- **hoeffding**: ``exp(-2n(ε - mean)² / range²)``; kept to compare with.

Both are valid for independent, identically distributed items and any ε; neither is asymptotic.
``tests/test_bounds.py`` checks their error rates by simulation at the boundary (mean loss = ε).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

BoundKind = Literal["betting", "hoeffding"]

MAX_BET = 0.5
"""The largest bet, as a share of what keeps the wealth nonnegative (WSR's truncation c)."""


def _scaled(losses: Sequence[float], epsilon: float, low: float, high: float) -> tuple[list[float], float]:
    if not high > low:
        raise ValueError(f"the loss range [{low}, {high}] is empty")
    width = high - low
    xs = []
    for loss in losses:
        if not low - 1e-9 <= loss <= high + 1e-9:
            raise ValueError(f"loss {loss} is outside its declared range [{low}, {high}]")
        xs.append(min(1.0, max(0.0, (loss - low) / width)))
    return xs, (epsilon - low) / width


def _peak_log_wealth(xs: Sequence[float], m: float, log_inv_delta: float) -> float:
    """The highest log-wealth reached betting, item by item, that the mean of ``xs`` (in
    [0, 1]) is below ``m``. Each bet is WSR's plug-in for n items, sized from the items before
    it only (a predictable bet), and capped so the wealth stays positive."""
    n = len(xs)
    cap = MAX_BET / (1.0 - m)  # keeps 1 + bet * (m - x) > 0 for every x in [0, 1]
    total, peak, mean_sum, sq_sum = 0.0, 0.0, 0.5, 0.25  # WSR's prior: one pseudo-item at 1/2
    variance = 0.25
    for i, x in enumerate(xs, start=1):
        bet = min(math.sqrt(2.0 * log_inv_delta / (n * variance)), cap)
        total += math.log1p(bet * (m - x))
        peak = max(peak, total)
        mean_sum += x
        sq_sum += (x - mean_sum / (i + 1)) ** 2
        variance = max(sq_sum / (i + 1), 1e-12)
    return peak


def betting_p_value(
    losses: Sequence[float],
    epsilon: float,
    *,
    low: float,
    high: float,
    delta: float = 0.1,
    seed: int = 0,
) -> float:
    """P-value of "the expected loss exceeds ``epsilon``" by betting; ``delta`` only tunes the
    bet sizes (the p-value is valid at any level), ``seed`` chooses the order of the bets."""
    if not losses:
        return 1.0
    xs, m = _scaled(losses, epsilon, low, high)
    if m >= 1.0:
        return 0.0  # no loss can exceed epsilon
    if m <= 0.0:
        return 1.0
    order = list(xs)
    random.Random(seed).shuffle(order)
    return min(1.0, math.exp(-_peak_log_wealth(order, m, math.log(1.0 / delta))))


def hoeffding_p_value(losses: Sequence[float], epsilon: float, *, low: float, high: float) -> float:
    """P-value of "the expected loss exceeds ``epsilon``" by Hoeffding's inequality."""
    if not losses:
        return 1.0
    mean = sum(losses) / len(losses)
    if mean >= epsilon:
        return 1.0
    return math.exp(-2 * len(losses) * (epsilon - mean) ** 2 / (high - low) ** 2)


def p_value(
    kind: BoundKind, losses: Sequence[float], epsilon: float, *, low: float, high: float, delta: float
) -> float:
    if kind == "betting":
        return betting_p_value(losses, epsilon, low=low, high=high, delta=delta)
    return hoeffding_p_value(losses, epsilon, low=low, high=high)


def upper_bound(
    kind: BoundKind,
    losses: Sequence[float],
    *,
    low: float,
    high: float,
    delta: float,
    tolerance: float = 1e-4,
) -> float:
    """The smallest ε the test certifies at level δ for these losses (an upper confidence bound
    on their expected value), found by bisection; ``high`` when none below it is certified."""
    lo, hi = (sum(losses) / len(losses) if losses else low), high
    if p_value(kind, losses, hi, low=low, high=high, delta=delta) > delta:
        return high
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        if p_value(kind, losses, mid, low=low, high=high, delta=delta) <= delta:
            hi = mid
        else:
            lo = mid
    return hi
