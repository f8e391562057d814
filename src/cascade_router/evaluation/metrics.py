"""Offline evaluation of a ladder on recorded answers.

1. **Probe**: every rung answers every item once, through the real engine, scorers and replay
   backends (``Engine.aprobe``).
2. **Simulate**: the pure policy (``policy.decide`` / ``next_rung`` / ``conclude``) is asked again
   over those attempts for any thresholds. For the configured thresholds this is exactly what the
   engine does live (a test checks it), and a threshold sweep costs no model calls.
3. **Measure**: quality, dollar cost, escalation rate, share answered per rung, and RouteLLM's curve
   metrics (APGR, CPT) over a sweep of the first rung's threshold, computed as RouteLLM's
   ``evaluate.py`` does: thresholds at the 10 quantile cut points of the scores, PGR =
   (q - q_weak) / (q_strong - q_weak), APGR = normalised trapezoid area over strong share in [0, 1].
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cascade_router import policy
from cascade_router.attempts import Attempt
from cascade_router.backend import Backend
from cascade_router.cascade import Cascade
from cascade_router.config import LadderConfig
from cascade_router.engine import Call, Engine
from cascade_router.errors import ConfigError
from cascade_router.evaluation.datasets import Dataset, DatasetItem
from cascade_router.evaluation.replay import ReplayBackend, ReplayJudge


@dataclass
class ItemProbe:
    """Every rung's attempt on one item, and the recorded quality of each rung's answer."""

    item_id: str
    attempts: list[Attempt]
    qualities: list[float]


@dataclass
class Outcome:
    """What the ladder does with one item under given thresholds."""

    answered_rung: int | None
    """None when no rung was accepted and the ladder raised."""
    rungs_called: int
    quality: float
    cost_usd: float | None
    reached_last: bool = False
    """Whether the last rung was called."""
    called: tuple[int, ...] = ()
    """The rungs called, in order."""


def replay_ladder(config: LadderConfig, dataset: Dataset, **options: Any) -> Cascade:
    """The ladder with each rung replayed from the dataset; ``options`` go to ``Cascade``
    (``decision_log``, ``tracing``...).

    A rung replays the dataset's answers of its ``model`` when that is a model name of the
    dataset (``replay:NAME`` or ``NAME``), else of its ``name``: a dataset made by ``record``
    holds each rung's answers under the rung's name, so the ladder file that recorded it
    replays it as it is."""
    rungs = []
    for i, rung in enumerate(config.rungs):
        model = rung.model.removeprefix("replay:") if isinstance(rung.model, str) else None
        if model in dataset.models:
            name = model
        elif rung.name is not None and rung.name in dataset.models:
            name = rung.name
        elif model is None:
            raise ConfigError(
                f"rungs[{i}]",
                f"no answers under the rung's name {rung.name!r} in the dataset; it has {dataset.models}",
            )
        else:
            raise ConfigError(
                f"rungs[{i}].model", f"{model!r} is not in the dataset; it has {dataset.models}"
            )
        rungs.append(
            rung.model_copy(
                update={
                    "model": ReplayBackend(dataset, name, provider=rung.provider),
                    "name": rung.name or name,
                }
            )
        )
    return Cascade(
        rungs, name=config.name, on_exhausted=config.on_exhausted, accept_last=config.accept_last, **options
    )


async def aprobe(
    cascade: Cascade,
    dataset: Dataset,
    *,
    concurrency: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[ItemProbe]:
    """Probe every item of ``dataset`` (in order) with bounded concurrency."""
    limit = asyncio.Semaphore(concurrency)
    names = [str(b.model) for b in cascade.backends]
    dataset.require_labels(names)
    verdicts = dataset.judge_calls
    judges: dict[tuple[int, int], Backend] = {}

    def resolve(model: Any, rung: int) -> Backend:
        # Judges answer from the verdicts `record` stored, where there are any.
        key = (id(model), rung)
        if key not in judges:
            live = cascade._resolve(model, rung)
            judges[key] = ReplayJudge(live, verdicts) if verdicts else live
        return judges[key]

    async def one(item: DatasetItem) -> ItemProbe:
        async with limit:
            call = Call(item.to_request(), cascade.backends, resolve)
            attempts = await cascade.engine.aprobe(call)
        if progress is not None:
            progress(1)
        return ItemProbe(item.id, attempts, [dataset.quality(item.id, n) for n in names])

    return list(await asyncio.gather(*(one(item) for item in dataset)))


def probe(cascade: Cascade, dataset: Dataset, **kwargs: Any) -> list[ItemProbe]:
    return asyncio.run(aprobe(cascade, dataset, **kwargs))


@dataclass(frozen=True, slots=True)
class _Decided:
    rung: int
    decision: policy.Decision
    score: float | None
    evidence: policy.Evidence


def simulate(
    engine: Engine,
    probes: Sequence[ItemProbe],
    thresholds: Sequence[float | None],
    skipped: Sequence[Collection[int]] | None = None,
) -> list[Outcome]:
    """The outcome of every item if the rungs had ``thresholds`` (None keeps a rung's own);
    ``skipped[i]``: the rungs a routing rule (the pre-router) rules out for item ``i``."""
    rules = [
        replace(rung, threshold=t) if t is not None and rung.scorer is not None else rung
        for rung, t in zip(engine.rungs, thresholds, strict=False)
    ] + list(engine.rungs[len(thresholds) :])
    n = len(rules)
    outcomes = []
    for k, p in enumerate(probes):
        decided: list[_Decided] = []
        cost: float | None = 0.0
        ruled_out = skipped[k] if skipped is not None else ()
        while (index := policy.next_rung(decided, n)) is not None:
            attempt = p.attempts[index]
            if index in ruled_out and index < n - 1:
                decided.append(_Decided(index, "skipped", None, attempt.evidence))
                continue
            verdict = policy.decide(
                rules[index], attempt.evidence, final=policy.is_final(index, n, engine.accept_last)
            )
            decided.append(_Decided(index, verdict.decision, attempt.score, attempt.evidence))
            c = attempt.total_cost_usd
            cost = None if c is None or cost is None else cost + c
        conclusion = policy.conclude(decided, engine.on_exhausted)
        answered = decided[conclusion.accepted].rung if conclusion.accepted is not None else None
        quality = p.qualities[answered] if answered is not None else 0.0
        called = tuple(d.rung for d in decided if d.decision != "skipped")
        outcomes.append(Outcome(answered, len(called), quality, cost, called[-1] == n - 1, called))
    return outcomes


@dataclass
class Point:
    """One point of a cost-quality curve."""

    threshold: float | None
    strong_share: float
    """Share of requests that reached the last rung."""
    quality: float
    cost_usd: float | None
    """Mean dollar cost per request (every call and judge call included)."""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def summarize(outcomes: Sequence[Outcome], n_rungs: int, threshold: float | None = None) -> Point:
    k = len(outcomes)
    costs = [o.cost_usd for o in outcomes]
    return Point(
        threshold,
        sum(o.reached_last for o in outcomes) / k,
        sum(o.quality for o in outcomes) / k,
        None if any(c is None for c in costs) else sum(c for c in costs if c is not None) / k,
    )


def first_scores(probes: Sequence[ItemProbe]) -> list[float]:
    """The first rung's score on every item (0 where it had none: error, invalid)."""
    return [p.attempts[0].score if p.attempts[0].score is not None else 0.0 for p in probes]


def sweep(engine: Engine, probes: Sequence[ItemProbe], *, fine: bool = False) -> list[Point]:
    """Quality and cost as the first rung's threshold sweeps from accept-all to escalate-all.

    RouteLLM's protocol: thresholds at the 10 quantile cut points of the scores; the last one is
    strict so that the curve reaches every request escalated. ``fine`` uses every distinct score.
    """
    if engine.rungs[0].scorer is None:
        raise ConfigError("rungs[0].scorer", "a sweep needs a scorer on the first rung")
    scores = sorted(first_scores(probes))
    cuts = sorted(set(scores)) if fine else [_quantile(scores, q / 10) for q in range(11)]
    n = len(engine.rungs)
    points = [summarize(simulate(engine, probes, [t]), n, t) for t in cuts]
    # strictly above the largest score: everything escalates (a threshold may exceed 1 here only
    # as a simulation device; configured thresholds stay in [0, 1])
    top = max(scores) + 1e-9
    points.append(summarize(simulate(engine, probes, [top]), n, top))
    return sorted(points, key=lambda p: (p.strong_share, p.quality))


def _quantile(ordered: Sequence[float], q: float) -> float:
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def apgr(points: Sequence[Point], q_weak: float, q_strong: float) -> float:
    """Average performance gap recovered: area under quality vs strong share, normalised."""
    xs = [p.strong_share for p in points]
    ys = [p.quality for p in points]
    if xs[0] > 0:
        xs, ys = [0.0, *xs], [q_weak, *ys]
    if xs[-1] < 1:
        xs, ys = [*xs, 1.0], [*ys, q_strong]
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return (area - q_weak) / (q_strong - q_weak)


def cpt(points: Sequence[Point], q_weak: float, q_strong: float, pgr: float) -> float | None:
    """Strong share needed to reach a performance gap recovered of ``pgr``, interpolated."""
    target = q_weak + pgr * (q_strong - q_weak)
    prev = Point(None, 0.0, q_weak, None)
    for p in points:
        if p.quality >= target:
            if p.quality == prev.quality:
                return p.strong_share
            frac = (target - prev.quality) / (p.quality - prev.quality)
            return prev.strong_share + max(0.0, min(1.0, frac)) * (p.strong_share - prev.strong_share)
        prev = p
    return None


def random_curve(
    probes: Sequence[ItemProbe], engine: Engine, *, seed: int = 0, draws: int = 50
) -> list[Point]:
    """A router that escalates a random share: the reference every scorer must beat."""
    rng = random.Random(seed)
    curves = []
    for _ in range(draws):
        scores = [rng.random() for _ in probes]
        curves.append(sweep(engine, [_rescored(p, s) for p, s in zip(probes, scores, strict=True)]))
    return [
        Point(
            None,
            sum(c[i].strong_share for c in curves) / draws,
            sum(c[i].quality for c in curves) / draws,
            _mean_cost([c[i] for c in curves]),
        )
        for i in range(len(curves[0]))
    ]


def oracle_curve(probes: Sequence[ItemProbe], engine: Engine) -> list[Point]:
    """The best any scorer could do: escalate first the items where the last rung gains most over
    the first (strong minus weak quality), so that every share escalated buys the most quality.
    Ranking by the first rung's quality alone would also escalate items the last rung gets wrong
    too, and with graded qualities would ignore how much better the last rung is."""
    gains = [p.qualities[-1] - p.qualities[0] for p in probes]
    low, high = min(gains), max(gains)
    span = (high - low) or 1.0
    # the largest gain gets the lowest score: it is escalated first
    return sweep(engine, [_rescored(p, 1.0 - (g - low) / span) for p, g in zip(probes, gains, strict=True)])


def _mean_cost(points: Sequence[Point]) -> float | None:
    costs = [p.cost_usd for p in points]
    return None if any(c is None for c in costs) else sum(c for c in costs if c is not None) / len(costs)


def _rescored(p: ItemProbe, score: float) -> ItemProbe:
    first = p.attempts[0]
    evidence = replace(first.evidence, score=score, missing=None, scorer_error=None)
    return replace(p, attempts=[replace(first, score=score, evidence=evidence), *p.attempts[1:]])


def with_scores(probes: Sequence[ItemProbe], scores: Sequence[float]) -> list[ItemProbe]:
    """The probes with the first rung's scores replaced (cross-fitted scores, baselines)."""
    return [_rescored(p, s) for p, s in zip(probes, scores, strict=True)]


@dataclass
class Report:
    """Everything ``cascade-router eval`` prints and writes."""

    dataset: str
    items: int
    ladder: list[str]
    configured: Point
    answered_share: dict[str, float]
    references: dict[str, Point]
    curve: list[Point]
    random_curve: list[Point]
    oracle_curve: list[Point]
    metrics: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "items": self.items,
            "ladder": self.ladder,
            "configured": self.configured.as_dict(),
            "answered_share": self.answered_share,
            "references": {k: v.as_dict() for k, v in self.references.items()},
            "metrics": self.metrics,
            "curve": [p.as_dict() for p in self.curve],
            "random_curve": [p.as_dict() for p in self.random_curve],
            "oracle_curve": [p.as_dict() for p in self.oracle_curve],
        }


def at_quality(points: Sequence[Point], target: float) -> Point | None:
    """Where a curve first reaches quality ``target``, interpolated between its points (strong
    share and cost both); None if it never does."""
    prev: Point | None = None
    for p in sorted(points, key=lambda p: p.strong_share):
        if p.quality >= target:
            if prev is None or p.quality == prev.quality:
                return p
            frac = (target - prev.quality) / (p.quality - prev.quality)
            cost = (
                prev.cost_usd + frac * (p.cost_usd - prev.cost_usd)
                if prev.cost_usd is not None and p.cost_usd is not None
                else None
            )
            return Point(None, prev.strong_share + frac * (p.strong_share - prev.strong_share), target, cost)
        prev = p
    return None


def curve_metrics(
    coarse: Sequence[Point], fine: Sequence[Point], q_weak: float, q_strong: float, strong_cost: float | None
) -> dict[str, float | None]:
    """RouteLLM's metrics on the protocol's 11-point curve, and the 95 % point on a fine curve."""
    best = at_quality(fine, 0.95 * q_strong)
    return {
        "apgr": apgr(coarse, q_weak, q_strong),
        "cpt50": cpt(coarse, q_weak, q_strong, 0.5),
        "cpt80": cpt(coarse, q_weak, q_strong, 0.8),
        "escalation_rate_at_95": best.strong_share if best else None,
        "cost_per_request_at_95": best.cost_usd if best else None,
        "savings_at_95": 1 - best.cost_usd / strong_cost
        if best and best.cost_usd is not None and strong_cost
        else None,
    }


def report(cascade: Cascade, probes: Sequence[ItemProbe], dataset_name: str, *, seed: int = 0) -> Report:
    engine = cascade.engine
    n = len(engine.rungs)
    configured = simulate(engine, probes, [])
    names = [r.name for r in engine.rungs]
    answered = {
        name: sum(o.answered_rung == i for o in configured) / len(configured) for i, name in enumerate(names)
    }
    cheap_only = Point(
        None,
        0.0,
        sum(p.qualities[0] for p in probes) / len(probes),
        _mean_cost([Point(None, 0, 0, p.attempts[0].total_cost_usd) for p in probes]),
    )
    strong_only = Point(
        None,
        1.0,
        sum(p.qualities[-1] for p in probes) / len(probes),
        _mean_cost([Point(None, 0, 0, p.attempts[-1].total_cost_usd) for p in probes]),
    )
    references = {"cheap_only": cheap_only, "strong_only": strong_only}
    curve = sweep(engine, probes) if engine.rungs[0].scorer is not None and n > 1 else []
    rand = random_curve(probes, engine, seed=seed) if curve else []
    oracle = oracle_curve(probes, engine) if curve else []
    metrics: dict[str, float | None] = {}
    qw, qs = cheap_only.quality, strong_only.quality
    if curve and qs != qw:
        metrics = curve_metrics(curve, sweep(engine, probes, fine=True), qw, qs, strong_only.cost_usd)
        metrics["random_apgr"] = apgr(rand, qw, qs)
        metrics["oracle_apgr"] = apgr(oracle, qw, qs)
    return Report(
        dataset=dataset_name,
        items=len(probes),
        ladder=names,
        configured=summarize(configured, n),
        answered_share=answered,
        references=references,
        curve=curve,
        random_curve=rand,
        oracle_curve=oracle,
        metrics=metrics,
    )


def bootstrap_curve_metrics(
    engine: Engine, probes: Sequence[ItemProbe], *, resamples: int = 200, seed: int = 0
) -> dict[str, dict[str, float | None]]:
    """95 % percentile-bootstrap intervals of APGR, CPT(50 %) and CPT(80 %), resampling items.

    A resample whose first and last rungs score alike has no APGR; a CPT a resample never reaches
    counts as 1 (every request escalated), so an interval reaching 1 says "may not reach it"."""
    rng = random.Random(seed)
    n = len(probes)
    samples: dict[str, list[float]] = {"apgr": [], "cpt50": [], "cpt80": []}
    for _ in range(resamples):
        chosen = [probes[rng.randrange(n)] for _ in range(n)]
        qw = sum(p.qualities[0] for p in chosen) / n
        qs = sum(p.qualities[-1] for p in chosen) / n
        if qs == qw:
            continue
        curve = sweep(engine, chosen)
        samples["apgr"].append(apgr(curve, qw, qs))
        for key, pgr in (("cpt50", 0.5), ("cpt80", 0.8)):
            value = cpt(curve, qw, qs, pgr)
            samples[key].append(1.0 if value is None else value)
    out: dict[str, dict[str, float | None]] = {}
    for key, values in samples.items():
        values.sort()
        if not values:
            out[key] = {"low": None, "high": None, "resamples": 0}
            continue
        out[key] = {
            "low": values[int(0.025 * len(values))],
            "high": values[min(len(values) - 1, int(0.975 * len(values)))],
            "resamples": len(values),
        }
    return out


def item_outcomes(engine: Engine, probes: Sequence[ItemProbe]) -> list[dict[str, Any]]:
    """What the configured ladder does with each item: for ``eval --items``."""
    outcomes = simulate(engine, probes, [])
    names = [r.name for r in engine.rungs]
    return [
        {
            "id": p.item_id,
            "answered_by": None if o.answered_rung is None else names[o.answered_rung],
            "rungs_called": o.rungs_called,
            "quality": o.quality,
            "cost_usd": o.cost_usd,
            "scores": {names[i]: a.score for i, a in enumerate(p.attempts)},
            "qualities": dict(zip(names, p.qualities, strict=True)),
        }
        for p, o in zip(probes, outcomes, strict=True)
    ]


def auroc(scores: Sequence[float], good: Sequence[bool]) -> float | None:
    """Area under the ROC curve of scores against labels (rank formula, ties averaged)."""
    pairs = sorted(zip(scores, good, strict=True), key=lambda x: x[0])
    ranks = [0.0] * len(pairs)
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(1 for _, g in pairs if g)
    negatives = len(pairs) - positives
    if not positives or not negatives:
        return None
    rank_sum = sum(r for r, (_, g) in zip(ranks, pairs, strict=True) if g)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass
class Interval:
    mean: float
    low: float
    high: float


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Mean of b - a over the same items, with a percentile bootstrap interval."""
    if len(a) != len(b) or not a:
        raise ValueError("paired samples must be non-empty and of equal length")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return Interval(
        sum(diffs) / n, means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]
    )
