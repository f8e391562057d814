"""The pre-router offline: what each rung's outcome was on recorded answers, and the cascade with
and without the pre-router on the same items (``learn --pre-router``, ``eval --pre-router``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cascade_router import policy
from cascade_router.engine import Engine
from cascade_router.evaluation.datasets import DatasetItem
from cascade_router.evaluation.metrics import ItemProbe, Outcome, simulate
from cascade_router.routing import PreRouterRule


def request_text(item: DatasetItem) -> str:
    """An item's request as the routing rules read it (``RouteContext.text``)."""
    return "\n".join(m.content for m in item.messages())


def predict(rule: PreRouterRule, items: Iterable[DatasetItem]) -> list[dict[str, float]]:
    """The pre-router's predictions for each item, in order."""
    model = rule.fitted
    return [model.predict(x) for x in model.embed([request_text(i) for i in items], rule.embeddings)]


def rung_outcomes(engine: Engine, probes: Sequence[ItemProbe], good_at: float) -> dict[str, list[bool]]:
    """For every rung below the last, by name: whether its answer to each item would be accepted
    (its scorer and threshold, as configured) and right (quality at or above ``good_at``)."""
    n = len(engine.rungs)
    out: dict[str, list[bool]] = {}
    for rung in engine.rungs[:-1]:
        verdicts = []
        for p in probes:
            attempt = p.attempts[rung.index]
            decision = policy.decide(
                rung, attempt.evidence, final=policy.is_final(rung.index, n, engine.accept_last)
            )
            verdicts.append(decision.decision == "accept" and p.qualities[rung.index] >= good_at)
        out[rung.name] = verdicts
    return out


def skips(
    engine: Engine, predictions: Sequence[Mapping[str, float]], threshold: float | Mapping[str, float]
) -> list[set[int]]:
    """The rungs the pre-router rules out for each item, at ``threshold``."""
    out = []
    for p in predictions:
        ruled = set()
        for rung in engine.rungs[:-1]:
            t = threshold.get(rung.name) if isinstance(threshold, Mapping) else threshold
            if t is not None and rung.name in p and p[rung.name] < t:
                ruled.add(rung.index)
        out.append(ruled)
    return out


@dataclass
class Figures:
    """The cascade's outcome on a set of items."""

    quality: float
    cost_usd: float | None
    first_rung_calls: float
    """Share of items whose first rung was called."""
    reached_last: float
    latency_s: float | None
    """Mean latency per item, the rungs called one after another (None: a latency is unknown)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def figures(
    outcomes: Sequence[Outcome],
    latencies: Sequence[Sequence[float | None]] | None = None,
) -> Figures:
    """``latencies[i][r]``: rung ``r``'s latency on item ``i`` (the replay's, or a model's)."""
    k = len(outcomes)
    costs = [o.cost_usd for o in outcomes]
    first = [bool(o.called) and o.called[0] == 0 for o in outcomes]
    latency: float | None = None
    if latencies is not None:
        values = [latencies[i][r] for i, o in enumerate(outcomes) for r in o.called]
        if all(v is not None for v in values):
            latency = sum(v for v in values if v is not None) / k
    return Figures(
        quality=sum(o.quality for o in outcomes) / k,
        cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c is not None) / k,
        first_rung_calls=sum(first) / k,
        reached_last=sum(o.reached_last for o in outcomes) / k,
        latency_s=latency,
    )


@dataclass
class Comparison:
    """The cascade without and with the pre-router, on the same items."""

    threshold: float | Mapping[str, float]
    without: Figures
    with_prerouter: Figures

    @property
    def cheap_calls_saved(self) -> float:
        """Share of the first rung's calls the pre-router saved."""
        base = self.without.first_rung_calls
        return 0.0 if base == 0 else 1 - self.with_prerouter.first_rung_calls / base

    @property
    def cost_delta_share(self) -> float | None:
        a, b = self.without.cost_usd, self.with_prerouter.cost_usd
        return None if a is None or b is None or a == 0 else b / a - 1

    @property
    def quality_delta(self) -> float:
        return self.with_prerouter.quality - self.without.quality

    @property
    def latency_saved_s(self) -> float | None:
        a, b = self.without.latency_s, self.with_prerouter.latency_s
        return None if a is None or b is None else a - b

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "without": self.without.as_dict(),
            "with": self.with_prerouter.as_dict(),
            "cheap_calls_saved": self.cheap_calls_saved,
            "quality_delta": self.quality_delta,
            "cost_delta_share": self.cost_delta_share,
            "latency_saved_s": self.latency_saved_s,
        }


def compare(
    engine: Engine,
    probes: Sequence[ItemProbe],
    predictions: Sequence[Mapping[str, float]],
    threshold: float | Mapping[str, float],
    latencies: Sequence[Sequence[float | None]] | None = None,
    *,
    thresholds: Sequence[float | None] | None = None,
    without: Figures | None = None,
) -> Comparison:
    """``thresholds``: the rungs' own (None: as configured), as ``metrics.simulate`` takes them;
    ``without``: the cascade's figures without the pre-router, when already worked out."""
    rung_thresholds = list(thresholds) if thresholds is not None else [None] * len(engine.rungs)
    if without is None:
        without = figures(simulate(engine, probes, rung_thresholds), latencies)
    routed = simulate(engine, probes, rung_thresholds, skips(engine, predictions, threshold))
    return Comparison(threshold, without, figures(routed, latencies))


def choose_threshold(
    engine: Engine,
    probes: Sequence[ItemProbe],
    predictions: Sequence[Mapping[str, float]],
    *,
    max_cost_increase: float = 0.02,
    max_quality_loss: float = 0.0,
    thresholds: Sequence[float | None] | None = None,
) -> tuple[float, Comparison]:
    """The highest threshold (most first-rung calls saved) at which the cascade costs at most
    ``max_cost_increase`` more and loses at most ``max_quality_loss`` quality, on these items.
    Give cross-fitted predictions: a model judged on the data it was fitted on looks better than
    it is."""
    first = engine.rungs[0].name
    ranked = sorted(p[first] for p in predictions if first in p)
    # Thresholds that skip 0.5 %, 1 %, ... 99.5 % of these items, each halfway between two
    # neighbouring predictions: new requests scored like the last skipped one are skipped too.
    n = len(ranked)
    cuts = sorted({min(n - 1, max(1, round(n * share / 200))) for share in range(1, 200)}) if n > 1 else []
    candidates = sorted({(ranked[k - 1] + ranked[k]) / 2 for k in cuts})
    best = compare(engine, probes, predictions, 0.0, thresholds=thresholds)
    for t in candidates:  # the cascade without the pre-router is the same for every candidate
        c = compare(engine, probes, predictions, t, thresholds=thresholds, without=best.without)
        cost = c.cost_delta_share
        affordable = cost is None or cost <= max_cost_increase
        if (
            affordable
            and c.quality_delta >= -max_quality_loss - 1e-12
            and c.cheap_calls_saved >= best.cheap_calls_saved
        ):
            best = c
    chosen = best.threshold
    assert not isinstance(chosen, Mapping)
    return float(chosen), best


def router_apgr(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> float:
    """APGR of a score used as a router by itself: the lowest-scored share of requests goes to the
    strong model, the rest to the weak one, for every share from 0 to 1 (RouteLLM's metric, on the
    exact curve rather than 10 cut points)."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: scores[i])
    q_weak, q_strong = sum(weak) / n, sum(strong) / n
    if q_strong == q_weak:
        raise ValueError("the two models' qualities are equal: APGR is undefined")
    quality = q_weak
    area = 0.0
    for i in order:
        after = quality + (strong[i] - weak[i]) / n
        area += (quality + after) / 2 / n
        quality = after
    return (area - q_weak) / (q_strong - q_weak)
