"""What ``cascade-router demo`` runs: the GSM8K ladder of the benchmark, and live ladders.

Offline (the default): RouteLLM's recorded GSM8K answers of Mixtral-8x7B (cheap) and GPT-4 (strong).
A learned scorer is fitted on one half of the items and its threshold calibrated there for 95 % of
GPT-4's quality; the other half then runs through the real engine with replayed answers. Live
(``--local``, ``--config``): the same questions go to real models, graded against GSM8K's reference
answers, with the strongest rung called on every question as the baseline.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cascade_router.attempts import Result
from cascade_router.cascade import Cascade
from cascade_router.config import LadderConfig
from cascade_router.evaluation import calibration
from cascade_router.evaluation import metrics as ev
from cascade_router.evaluation.datasets import Dataset, DatasetItem
from cascade_router.model_io import Request, Usage
from cascade_router.pricing import Price, cost_usd
from cascade_router.scorers.learned import (
    PREFIX_CHARS,
    Example,
    LearnedModel,
    LearnedScorer,
    cross_fit,
    fit,
)

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
PRICES = {
    WEAK: {"input_per_mtok": 0.24, "output_per_mtok": 0.24},
    STRONG: {"input_per_mtok": 10.0, "output_per_mtok": 30.0},
}
"""RouteLLM's prices for the recorded models (per million tokens), so figures compare with theirs."""
DATASET = "builtin:routellm-gsm8k"


def examples(ds: Dataset, ids: Sequence[str]) -> list[Example]:
    """The cheap model's recorded answers to ``ids`` as labelled examples (right or wrong)."""
    return [
        Example(str(ds.get(i).request), ds.get(i).answers[WEAK].text, ds.quality(i, WEAK) >= 0.5) for i in ids
    ]


def gsm8k_ladder(scorer: Any, threshold: float = 0.5) -> LadderConfig:
    """Mixtral → GPT-4 with RouteLLM's prices, models named as in the recorded data."""
    return LadderConfig(
        name="gsm8k-mixtral-gpt4",
        rungs=[
            {
                "model": WEAK,
                "name": "mixtral",
                "scorer": scorer,
                "threshold": threshold,
                "price": PRICES[WEAK],
            },
            {"model": STRONG, "name": "gpt-4", "price": PRICES[STRONG]},
        ],
    )


def split(ds: Dataset, seed: int = 0) -> tuple[list[str], list[str]]:
    """Half the items to fit and calibrate on, half to run: a seeded shuffle, each half sorted."""
    order = [item.id for item in ds]
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])


@dataclass
class Prepared:
    dataset: Dataset
    fit_ids: list[str]
    run_ids: list[str]
    model: LearnedModel
    threshold: float
    target: float
    cascade: Cascade
    """The ladder on the held-out half, with the calibrated threshold and replayed answers."""


def prepare(*, seed: int = 0, target: float = 0.95, decision_log: Any = None) -> Prepared:
    """Fit the scorer and calibrate its threshold on one half (about 5 s on 2 cores)."""
    ds = Dataset.load(DATASET)
    fit_ids, run_ids = split(ds, seed)
    train = examples(ds, fit_ids)
    # The threshold is calibrated on scores the fitted half's items get from models that never
    # saw them (cross-fitting), as they would be for new traffic; the prefix model (early abort)
    # learns to predict those scores from the start of an answer.
    inner = cross_fit(train, folds=5, seed=seed)
    model = fit(train, prefixes=PREFIX_CHARS, prefix_targets=inner)
    fit_half = ds.subset(fit_ids)
    fit_cascade = ev.replay_ladder(gsm8k_ladder(LearnedScorer(model=model)), fit_half)
    probes = ev.with_scores(ev.probe(fit_cascade, fit_half), inner)
    choice = calibration.choose(fit_cascade.engine, probes, calibration.Target("quality", target))
    threshold = round(choice.thresholds[0], 4)
    ladder = gsm8k_ladder(LearnedScorer(model=model), threshold)
    cascade = ev.replay_ladder(ladder, ds.subset(run_ids), decision_log=decision_log)
    return Prepared(ds, fit_ids, run_ids, model, threshold, target, cascade)


@dataclass
class Row:
    """One request of the demo: what the cascade did and what always-strong would have done."""

    item_id: str
    result: Result
    quality: float | None
    """The cascade's answer: 1 right, 0 wrong, None when it cannot be graded."""
    strong_quality: float | None
    strong_cost: float | None
    strong_tokens: int | None


def why(result: Result) -> str:
    """One line: which rung answered and the score that decided each step."""
    parts = []
    for a in result.attempts:
        if a.decision == "error":
            parts.append(f"{a.name} failed ({(a.error or '').split(':')[0]})")
        elif a.score is not None and a.threshold is not None:
            op = "≥" if a.score >= a.threshold else "<"
            parts.append(f"{a.name} {a.score:.2f} {op} {a.threshold:.2f}")
        elif a.decision == "accept":
            parts.append(a.name)  # the last rung, accepted without a threshold
        else:
            parts.append(f"{a.name} {a.decision}: {a.reason}")
    return " → ".join(parts)


def replayed_rows(prepared: Prepared, limit: int | None = None) -> Iterator[Row]:
    """Run the held-out items through the cascade, one row per request."""
    ds = prepared.dataset
    for item_id in prepared.run_ids[:limit] if limit else prepared.run_ids:
        item = ds.get(item_id)
        result = prepared.cascade.invoke(item.to_request())
        strong = item.answers[STRONG]
        usage = Usage(strong.input_tokens or 0, strong.output_tokens or 0)
        yield Row(
            item_id,
            result,
            float(result.output.extra["quality"]),
            strong.quality,
            Price(**PRICES[STRONG]).cost(usage),
            usage.total_tokens,
        )


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def grade(answer: str, reference: str | None) -> float | None:
    """GSM8K grading: the answer's last number equals the reference; None without a reference."""
    if reference is None:
        return None
    numbers = _NUMBER.findall(answer)
    if not numbers:
        return 0.0
    try:
        return float(float(numbers[-1].replace(",", "")) == float(reference.replace(",", "")))
    except ValueError:
        return 0.0


def local_ladder(url: str, threshold: float = 0.9) -> dict[str, Any]:
    """Two rungs on the local Gemma 3 270M server: the same model, a short and a longer budget.

    There is one local model, so this shows the wire path (real logprobs deciding, real tokens),
    not a cheap and a strong model. Only the scored rung asks for logprobs: this server computes
    them over Gemma's 262k-token vocabulary for every generated token, which is slow on a CPU."""
    common = {"provider": "openai", "model": "gemma-3-270m", "base_url": url, "api_key": "sk-local"}
    return {
        "name": "local-gemma",
        "rungs": [
            {
                "model": {**common, "max_tokens": 16, "temperature": 0.0},
                "name": "gemma-short",
                "provider": "local",
                "price": 0,  # on this machine: free, not unknown
                "scorer": {"kind": "logprob", "aggregate": "mean"},
                "threshold": threshold,
            },
            {
                "model": {**common, "max_tokens": 96, "temperature": 0.0, "logprobs": False},
                "name": "gemma-long",
                "provider": "local",
                "price": 0,
            },
        ],
    }


def live_rows(cascade: Cascade, items: Sequence[DatasetItem], *, system: str | None = None) -> Iterator[Row]:
    """Ask real models; the strongest rung is also asked every question the cascade did not send
    it, as the always-strong baseline."""
    strongest = cascade.backends[-1]
    runtime = cascade.engine.rungs[-1]
    for item in items:
        request = Request.from_text(str(item.request), system=system)
        result = cascade.invoke(request)
        last = result.attempts[-1]
        if last.rung == len(cascade.backends) - 1 and last.output is not None:
            strong_text, strong_usage = last.output.text, last.usage
        else:
            out = strongest.invoke(request)
            strong_text, strong_usage = out.text, out.usage
        yield Row(
            item.id,
            result,
            grade(result.output.text, item.reference),
            grade(strong_text, item.reference),
            cost_usd(strong_usage, provider=runtime.provider, model=runtime.model, price=runtime.price),
            strong_usage.total_tokens if strong_usage else None,
        )


@dataclass
class Summary:
    requests: int
    quality: float | None
    strong_quality: float | None
    cost: float | None
    strong_cost: float | None
    tokens: int
    strong_tokens: int | None
    answered: dict[str, int]

    @property
    def saving(self) -> float | None:
        if self.cost is None or not self.strong_cost:
            return None
        return 1 - self.cost / self.strong_cost


def summarize(rows: Sequence[Row]) -> Summary:
    def mean(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known and len(known) == len(values) else None

    def total(values: Sequence[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    answered: dict[str, int] = {}
    for r in rows:
        answered[r.result.answered_by.name] = answered.get(r.result.answered_by.name, 0) + 1
    strong_tokens = [r.strong_tokens for r in rows]
    return Summary(
        requests=len(rows),
        quality=mean([r.quality for r in rows]),
        strong_quality=mean([r.strong_quality for r in rows]),
        cost=total([r.result.cost_usd for r in rows]),
        strong_cost=total([r.strong_cost for r in rows]),
        tokens=sum(r.result.usage.total_tokens for r in rows),
        strong_tokens=None if any(t is None for t in strong_tokens) else sum(t or 0 for t in strong_tokens),
        answered=answered,
    )
