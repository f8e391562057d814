"""Does a calibrated threshold keep its promise on data it was not chosen on?

100 random 50/50 splits of the built-in GSM8K (RouteLLM's recorded Mixtral-8x7B and GPT-4
answers). On each split, on the first half only: the learned scorer is fitted, every item of the
half gets a cross-fitted score (10 folds: from a model that never saw it, as new traffic would), and the
threshold is chosen for 95 % of GPT-4's quality. The second half then runs with the scorer fitted
on the whole first half and that threshold. Modes:

- ``guaranteed``: Learn-then-Test with the betting test on the signed loss, ε = 5 % of GPT-4's
  accuracy on the first half, δ = 0.1 (``calibrate --guaranteed``);
- ``plain``: the cheapest threshold that meets 95 % on the first half (``calibrate``);
- ``hoeffding_one_sided``: the previous guaranteed mode (Hoeffding on the loss clipped at 0), for
  comparison;
- ``oracle``: the least escalation that meets 95 % on the second half itself, escalating the
  items where GPT-4 gains most first (a bound no scorer can beat, not a mode).

A split "meets the target" when the second half's quality is at least 95 % of GPT-4's on it.

    .venv/bin/python benchmarks/calibration_holdout.py [--splits 100] [--workers 2]

Writes benchmarks/results/calibration_holdout.json (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from cascade_router.evaluation import calibration, demo
from cascade_router.evaluation import metrics as ev
from cascade_router.evaluation.datasets import Dataset
from cascade_router.scorers.learned import LearnedScorer, cross_fit, fit

RESULTS = Path(__file__).parent / "results" / "calibration_holdout.json"
TARGET = 0.95
DELTA = 0.1
FOLDS = 10
"""Folds of the cross-fitted scores of the first half. With 10, each score comes from a model
fitted on 90 % of the half, closer to the model fitted on all of it that scores the second half
than with 5 (80 %): measured on the same 100 splits, the guaranteed mode's median escalation is
54.4 % with 10 folds and 57.8 % with 5, meeting the target in 94 % and 95 % of splits."""


def oracle_escalation(probes: list[ev.ItemProbe]) -> float:
    """The least share of items to escalate for TARGET of the strong model's quality, escalating
    the largest gains (strong minus weak quality) first."""
    strong = sum(p.qualities[-1] for p in probes)
    loss = sum(p.qualities[-1] - p.qualities[0] for p in probes)
    allowed = (1 - TARGET) * strong
    gains = sorted((p.qualities[-1] - p.qualities[0] for p in probes), reverse=True)
    escalated = 0
    for gain in gains:
        if loss <= allowed or gain <= 0:
            break
        loss -= gain
        escalated += 1
    return escalated / len(probes)


def hoeffding_one_sided(engine: Any, probes: list[ev.ItemProbe], epsilon: float) -> float | None:
    """The previous guaranteed mode's threshold: Hoeffding on the loss clipped at 0."""
    candidates = sorted(calibration._candidates(probes, 0, 400), reverse=True)

    def losses(t: float) -> list[float]:
        outcomes = ev.simulate(engine, probes, [t])
        return [max(0.0, p.qualities[-1] - o.quality) for p, o in zip(probes, outcomes, strict=True)]

    return calibration.learn_then_test(
        candidates, losses, epsilon=epsilon, delta=DELTA, low=0.0, high=1.0, bound="hoeffding"
    )


def one_split(seed: int) -> dict[str, Any]:
    ds = Dataset.load(demo.DATASET)
    fit_ids, run_ids = demo.split(ds, seed)
    train = demo.examples(ds, fit_ids)
    model = fit(train)
    crossfitted = cross_fit(train, folds=FOLDS, seed=seed)
    first, second = ds.subset(fit_ids), ds.subset(run_ids)
    cal = ev.replay_ladder(demo.gsm8k_ladder(LearnedScorer(model=model)), first)
    cal_probes = ev.with_scores(ev.probe(cal, first), crossfitted)
    held = ev.replay_ladder(demo.gsm8k_ladder(LearnedScorer(model=model)), second)
    held_probes = ev.probe(held, second)
    strong_first = statistics.mean(p.qualities[-1] for p in cal_probes)
    strong_second = statistics.mean(p.qualities[-1] for p in held_probes)

    def measured(threshold: float | None) -> dict[str, Any]:
        if threshold is None:  # nothing certified: every request escalates
            return {"threshold": None, "escalation": 1.0, "quality_vs_strong": 1.0, "meets_target": True}
        outcomes = ev.simulate(held.engine, held_probes, [threshold])
        ratio = statistics.mean(o.quality for o in outcomes) / strong_second
        return {
            "threshold": threshold,
            "escalation": calibration.escalation_rate(outcomes),
            "quality_vs_strong": ratio,
            "meets_target": ratio >= TARGET - 1e-12,
        }

    epsilon = (1 - TARGET) * strong_first
    row: dict[str, Any] = {"seed": seed}
    try:
        guaranteed = calibration.guaranteed(cal.engine, cal_probes, epsilon=epsilon, delta=DELTA)
        row["guaranteed"] = measured(guaranteed.thresholds[0])
    except calibration.GuaranteeError:
        row["guaranteed"] = measured(None)
    plain = calibration.choose(cal.engine, cal_probes, calibration.Target("quality", TARGET))
    row["plain"] = measured(plain.thresholds[0])
    row["hoeffding_one_sided"] = measured(hoeffding_one_sided(cal.engine, cal_probes, epsilon))
    row["oracle"] = {"escalation": oracle_escalation(held_probes)}
    return row


def summary(rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    escalations = sorted(r[mode]["escalation"] for r in rows)
    out: dict[str, Any] = {
        "median_escalation": statistics.median(escalations),
        "escalation_p10_p90": [escalations[len(rows) // 10], escalations[(9 * len(rows)) // 10]],
    }
    if "meets_target" in rows[0][mode]:
        ratios = sorted(r[mode]["quality_vs_strong"] for r in rows)
        out["share_meeting_target"] = sum(r[mode]["meets_target"] for r in rows) / len(rows)
        out["median_quality_vs_strong"] = statistics.median(ratios)
        out["min_quality_vs_strong"] = ratios[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.monotonic()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one_split, range(args.splits)))
    modes = ("guaranteed", "plain", "hoeffding_one_sided", "oracle")
    result = {
        "splits": args.splits,
        "target": f"{TARGET:.0%} of GPT-4's quality on the held-out half",
        "epsilon": "5 % of GPT-4's accuracy on the calibration half",
        "delta": DELTA,
        "crossfit_folds": FOLDS,
        **{mode: summary(rows, mode) for mode in modes},
        "per_split": rows,
    }
    print(f"{args.splits} splits in {time.monotonic() - started:.0f} s")
    print(
        f"{'mode':<22} {'median escalation':>18} {'p10-p90':>14} {'meets target':>13} {'worst quality':>14}"
    )
    for mode in modes:
        s = result[mode]
        low, high = s["escalation_p10_p90"]
        share = f"{s['share_meeting_target']:.0%}" if "share_meeting_target" in s else "-"
        worst = f"{s['min_quality_vs_strong']:.1%}" if "min_quality_vs_strong" in s else "-"
        print(f"{mode:<22} {s['median_escalation']:>18.1%} {low:>6.1%}-{high:<6.1%} {share:>13} {worst:>14}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
