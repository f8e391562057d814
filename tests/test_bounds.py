"""The tests behind the guaranteed calibration: their error rates, checked by simulation."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from cascade_router.evaluation import bounds

DELTA = 0.1
TRIALS = 400


def _room(delta: float = DELTA, trials: int = TRIALS) -> float:
    """Three standard errors of a rejection rate of δ measured over ``trials`` trials."""
    return 3 * math.sqrt(delta * (1 - delta) / trials)


def ternary(p_worse: float, p_better: float) -> Callable[[random.Random], float]:
    """A binary-quality item's signed loss: +1 when the cascade's answer is wrong and the strong
    one right, -1 the other way round, 0 when they agree."""

    def draw(rng: random.Random) -> float:
        u = rng.random()
        return 1.0 if u < p_worse else -1.0 if u < p_worse + p_better else 0.0

    return draw


def graded(mean: float) -> Callable[[random.Random], float]:
    """A graded item's signed loss in [-1, 1]: a skewed Beta draw moved to have ``mean``."""
    a, b = 0.6, 3.0  # Beta mean a / (a + b)

    def draw(rng: random.Random) -> float:
        return -1 + 2 * rng.betavariate(a, b) + (mean - (-1 + 2 * a / (a + b)))

    return draw


def rejection_rate(draw: Callable[[random.Random], float], epsilon: float, n: int, kind: str) -> float:
    rng = random.Random(11)
    rejected = 0
    for trial in range(TRIALS):
        losses = [min(1.0, max(-1.0, draw(rng))) for _ in range(n)]
        if kind == "betting":
            p = bounds.betting_p_value(losses, epsilon, low=-1, high=1, delta=DELTA, seed=trial)
        else:
            p = bounds.hoeffding_p_value(losses, epsilon, low=-1, high=1)
        rejected += p <= DELTA
    return rejected / TRIALS


@pytest.mark.parametrize("kind", ["betting", "hoeffding"])
@pytest.mark.parametrize(
    ("name", "draw", "epsilon", "n"),
    [
        # mean loss exactly ε: the hardest case for the promise
        ("rare disagreements", ternary(0.06, 0.02), 0.04, 300),
        ("frequent disagreements", ternary(0.25, 0.20), 0.05, 300),
        ("few items", ternary(0.10, 0.05), 0.05, 40),
        ("graded qualities", graded(0.03), 0.03, 300),
    ],
)
def test_a_loss_exactly_at_epsilon_is_certified_at_most_delta_of_the_time(
    kind: str, name: str, draw: Callable[[random.Random], float], epsilon: float, n: int
) -> None:
    assert rejection_rate(draw, epsilon, n, kind) <= DELTA + _room()


def test_an_invalid_normal_approximation_breaks_the_same_check() -> None:
    """The check above can fail: a z-test (mean + 1.28 standard errors) is not valid for a rare,
    skewed loss on few items, and certifies too often."""
    rng = random.Random(3)
    epsilon, n, rejected = 0.05, 20, 0
    draw = ternary(0.05, 0.0)
    for _ in range(TRIALS):
        losses = [draw(rng) for _ in range(n)]
        mean = sum(losses) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in losses) / (n - 1))
        rejected += mean + 1.2816 * sd / math.sqrt(n) < epsilon
    assert rejected / TRIALS > DELTA + _room()


def test_betting_certifies_what_hoeffding_cannot() -> None:
    """Mostly zero losses (the cascade answers as the strong model would): the betting test
    certifies a small ε that Hoeffding's range-bound cannot."""
    rng = random.Random(5)
    losses = [ternary(0.01, 0.01)(rng) for _ in range(650)]
    assert bounds.betting_p_value(losses, 0.043, low=-1, high=1) <= DELTA
    assert bounds.hoeffding_p_value(losses, 0.043, low=-1, high=1) > DELTA
    betting = bounds.upper_bound("betting", losses, low=-1, high=1, delta=DELTA)
    hoeffding = bounds.upper_bound("hoeffding", losses, low=-1, high=1, delta=DELTA)
    assert betting < hoeffding / 2


def test_upper_bound_is_the_smallest_certified_epsilon() -> None:
    rng = random.Random(9)
    losses = [ternary(0.05, 0.02)(rng) for _ in range(400)]
    ub = bounds.upper_bound("betting", losses, low=-1, high=1, delta=DELTA)
    assert sum(losses) / len(losses) < ub < 1
    assert bounds.betting_p_value(losses, ub, low=-1, high=1, delta=DELTA) <= DELTA
    assert bounds.betting_p_value(losses, ub - 0.002, low=-1, high=1, delta=DELTA) > DELTA


def test_losses_outside_their_declared_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"loss 1.5 is outside its declared range \[-1, 1\]"):
        bounds.betting_p_value([0.0, 1.5], 0.1, low=-1, high=1)
