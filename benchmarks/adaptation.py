"""Feedback adaptation under a drifting traffic mix: thresholds that follow the traffic.

The built-in GSM8K, seed-0 split: the learned scorer is fitted and the cascade's threshold
calibrated (95 % of GPT-4's quality) on the first half, and the pre-router fitted there too. The
second half is then sent through a real ``Cascade`` (replayed answers) as a stream whose mix drifts
from easy to hard: the share of questions Mixtral gets wrong grows from 15 % to 60 %. After each
answer the caller labels it (``record_feedback`` with the recorded quality), as an application
with thumbs up / down would. Three ladders, same stream:

- ``fixed``: thresholds as calibrated;
- ``adapt_thresholds``: the rung threshold moves (target error among Mixtral's accepted answers: the
  rate measured on the first half);
- ``adapt_both``: that, and the pre-router (at the threshold ``learn --pre-router`` would choose)
  recalibrating from outcomes.

Reported per quarter of the stream: quality, the error rate among Mixtral's accepted answers,
cost per request, and the thresholds at the end of the quarter.

    .venv/bin/python benchmarks/adaptation.py

Writes benchmarks/results/adaptation.json (about a minute).
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any

from cascade_router.evaluation import calibration, demo, prerouting
from cascade_router.evaluation import metrics as ev
from cascade_router.evaluation.datasets import Dataset
from cascade_router.routing import PreRouterRule, difficulty
from cascade_router.scorers.learned import LearnedScorer, cross_fit, fit

RESULTS = Path(__file__).parent / "results" / "adaptation.json"
SEED = 0
QUARTERS = 4


def drifting_order(ds: Dataset, run_ids: list[str]) -> list[str]:
    """The second half as a stream drifting from easy to hard: the share of questions Mixtral
    gets wrong grows from 15 % to 60 % (a simulation may know what the cascade does not)."""
    hard = [i for i in run_ids if ds.quality(i, demo.WEAK) < 0.5]
    easy = [i for i in run_ids if ds.quality(i, demo.WEAK) >= 0.5]
    rng = random.Random(SEED)
    rng.shuffle(easy)
    rng.shuffle(hard)
    stream = []
    n = len(run_ids)
    for k in range(n):
        share_hard = 0.15 + 0.45 * k / (n - 1)
        pool = hard if (rng.random() < share_hard and hard) or not easy else easy
        stream.append(pool.pop())
    return stream


def run(
    ds: Dataset, stream: list[str], config: Any, prerouter: PreRouterRule | None, adapt: dict[str, Any] | None
) -> dict[str, Any]:
    options: dict[str, Any] = {"tracing": False}
    if adapt is not None:
        options["adapt_thresholds"] = adapt
    if prerouter is not None:
        options["routing"] = [prerouter]
    cascade = ev.replay_ladder(config, ds.subset(stream), **options)
    engine = cascade.engine
    rows = []
    quarter = len(stream) // QUARTERS
    out = []
    for k, item_id in enumerate(stream):
        item = ds.get(item_id)
        result = cascade.invoke(item.to_request())
        rung = result.answered_by.rung
        quality = ds.quality(item_id, demo.WEAK if rung == 0 else demo.STRONG)
        if engine.learns_from_feedback:
            cascade.record_feedback(result.request_id, quality)
        rows.append(
            (quality, rung, result.cost_usd or 0.0, any(a.decision == "skipped" for a in result.attempts))
        )
        if (k + 1) % quarter == 0 and len(out) < QUARTERS:
            part = rows[-quarter:]
            accepted = [q for q, r, _, _ in part if r == 0]
            out.append(
                {
                    "quality": statistics.mean(q for q, *_ in part),
                    "mixtral_accepted_error": 1 - statistics.mean(accepted) if accepted else None,
                    "mixtral_answered": len(accepted) / len(part),
                    "prerouted": sum(s for *_, s in part) / len(part),
                    "cost_per_request": statistics.mean(c for _, _, c, _ in part),
                    "threshold_end": engine.adapter.threshold(0)
                    if engine.adapter
                    else engine.rungs[0].threshold,
                    "prerouter_bias_end": prerouter.bias("mixtral") if prerouter is not None else None,
                }
            )
    return {
        "quality": statistics.mean(q for q, *_ in rows),
        "cost_per_request": statistics.mean(c for _, _, c, _ in rows),
        "quarters": out,
    }


def main() -> None:
    ds = Dataset.load(demo.DATASET)
    fit_ids, run_ids = demo.split(ds, SEED)
    first = ds.subset(fit_ids)
    train = demo.examples(ds, fit_ids)
    scorer = LearnedScorer(model=fit(train))
    crossfitted = cross_fit(train, folds=5, seed=SEED)
    cal = ev.replay_ladder(demo.gsm8k_ladder(scorer), first)
    cal_probes = ev.with_scores(ev.probe(cal, first), crossfitted)
    threshold = calibration.choose(cal.engine, cal_probes, calibration.Target("quality", 0.95)).thresholds[0]
    config = demo.gsm8k_ladder(scorer, threshold)
    outcomes = ev.simulate(cal.engine, cal_probes, [threshold])
    accepted = [o.quality for o in outcomes if o.answered_rung == 0]
    target_error = 1 - statistics.mean(accepted)
    # The pre-router, fitted and its threshold chosen on the first half (as learn --pre-router does).
    a = ev.replay_ladder(config, first)
    a_probes = ev.with_scores(ev.probe(a, first), crossfitted)
    texts = [str(ds.get(i).request) for i in fit_ids]
    targets = prerouting.rung_outcomes(a.engine, a_probes, 0.5)
    held = difficulty.cross_fit(texts, targets, folds=5, seed=SEED)
    chosen, _ = prerouting.choose_threshold(a.engine, a_probes, [{"mixtral": p} for p in held["mixtral"]])
    model = difficulty.fit(texts, targets)
    model.threshold = chosen
    stream = drifting_order(ds, run_ids)
    adapt = {"target_error": target_error, "step": 0.02, "max_move": 0.2}
    results = {
        "fixed": run(ds, stream, config, None, None),
        "adapt_thresholds": run(ds, stream, config, None, adapt),
        "adapt_both": run(
            ds,
            stream,
            config,
            PreRouterRule(model=model, adapt={"step": 0.02, "max_shift": 0.15, "seed": SEED}),
            adapt,
        ),
    }
    out = {
        "dataset": "RouteLLM GSM8K, 1,307 decontaminated items; seed-0 split",
        "command": ".venv/bin/python benchmarks/adaptation.py",
        "calibrated_threshold": threshold,
        "target_error": target_error,
        "prerouter_threshold": chosen,
        "stream": f"{len(stream)} requests, share Mixtral gets wrong from 15 % to 60 %",
        **results,
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"calibrated threshold {threshold:.4f}; "
        f"target error among Mixtral's accepted answers {target_error:.1%}"
    )
    for name, r in results.items():
        print(f"{name}: quality {r['quality']:.1%}, cost/request ${r['cost_per_request']:.5f}")
        for j, q in enumerate(r["quarters"]):
            err = q["mixtral_accepted_error"]
            print(
                f"  quarter {j + 1}: quality {q['quality']:.1%}, error among Mixtral's accepted "
                f"{'-' if err is None else f'{err:.1%}'}, Mixtral answered {q['mixtral_answered']:.1%}, "
                f"pre-routed {q['prerouted']:.1%}, ${q['cost_per_request']:.5f}/request, threshold "
                f"{q['threshold_end']:.3f}"
                + (
                    ""
                    if q["prerouter_bias_end"] is None
                    else f", pre-router bias {q['prerouter_bias_end']:+.3f}"
                )
            )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
