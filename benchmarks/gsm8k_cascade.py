"""Mixtral-8x7B -> GPT-4 cascade on RouteLLM's recorded GSM8K answers (1,307 decontaminated items).

The first rung is scored by the learned scorer (cheap answer features + hashed words, logistic
regression), which sees only the request and Mixtral's answer. Measured as RouteLLM measures
routers (benchmark protocol): APGR, CPT(50 %), CPT(80 %) over the 11-point threshold sweep, and
the escalation rate and dollar saving against always-GPT-4 at 95 % of GPT-4's accuracy, every
Mixtral call counted, with RouteLLM's prices (GPT-4 $10/$30, Mixtral $0.24/$0.24 per 1M tokens).

Never measured on what the scorer was fitted on:
- split:    fitted on half the items (seed 0), measured on the other half;
- crossfit: 5-fold cross-fitting, every item scored by a model fitted without it;
- calibrated: the threshold for 95 % is chosen on the fitted half (from cross-fitted scores inside
  it) and applied to the other half, so its quality is what a user would get, not a curve reading.

    .venv/bin/python benchmarks/gsm8k_cascade.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cascade_router.evaluation import demo
from cascade_router.evaluation import metrics as ev
from cascade_router.evaluation.demo import PRICES
from cascade_router.scorers.learned import LearnedScorer, cross_fit, fit

# The ladder, prices and examples are the demo's (``cascade-router demo`` shows this benchmark's run).
examples = demo.examples
ladder = demo.gsm8k_ladder
SEED = 0
RESULTS = Path(__file__).parent / "results"


def metrics_of(probes: list[ev.ItemProbe], cascade: Any) -> dict[str, Any]:
    rep = ev.report(cascade, probes, "routellm-gsm8k", seed=SEED)
    qw, qs = rep.references["cheap_only"].quality, rep.references["strong_only"].quality
    strong_cost = rep.references["strong_only"].cost_usd
    engine = cascade.engine
    oracle_probes = ev.with_scores(probes, [p.qualities[0] for p in probes])
    oracle = ev.curve_metrics(
        rep.oracle_curve, ev.sweep(engine, oracle_probes, fine=True), qw, qs, strong_cost
    )
    rnd = ev.curve_metrics(rep.random_curve, rep.random_curve, qw, qs, strong_cost)
    return {
        "items": len(probes),
        "weak_quality": qw,
        "strong_quality": qs,
        "weak_cost_per_request": rep.references["cheap_only"].cost_usd,
        "strong_cost_per_request": strong_cost,
        **{k: v for k, v in rep.metrics.items() if not k.endswith("_apgr")},
        "random": rnd,
        "oracle": oracle,
        "curve": [p.as_dict() for p in rep.curve],
        "report": rep,
    }


def main() -> None:
    t0 = time.perf_counter()
    # The demo's preparation: the seeded split, the scorer fitted on one half, and a threshold
    # calibrated there (from scores cross-fitted inside it, as a user would before deploying).
    prepared = demo.prepare(seed=SEED, target=0.95)
    ds, fit_ids, test_ids, model = prepared.dataset, prepared.fit_ids, prepared.run_ids, prepared.model
    ids = [item.id for item in ds]

    # 1. Fitted on one half, measured on the other.
    model = fit(examples(ds, fit_ids))
    test = ds.subset(test_ids)
    cascade = ev.replay_ladder(ladder(LearnedScorer(model=model)), test)
    probes = ev.probe(cascade, test)
    split = metrics_of(probes, cascade)

    # 1b. The calibrated threshold, used on the other half.
    chosen = prepared.threshold
    realized = ev.summarize(ev.simulate(cascade.engine, probes, [chosen]), 2, chosen)
    calibrated = {
        "threshold": chosen,
        "quality": realized.quality,
        "quality_vs_strong": realized.quality / split["strong_quality"],
        "escalation_rate": realized.strong_share,
        "cost_per_request": realized.cost_usd,
        "savings": 1 - realized.cost_usd / split["strong_cost_per_request"] if realized.cost_usd else None,
    }

    # 2. Five-fold cross-fitting over every item.
    all_scores = cross_fit(examples(ds, ids), folds=5, seed=SEED)
    full_cascade = ev.replay_ladder(ladder(LearnedScorer(model=model)), ds)
    full_probes = ev.with_scores(ev.probe(full_cascade, ds), all_scores)
    crossfit = metrics_of(full_probes, full_cascade)

    RESULTS.mkdir(exist_ok=True)
    plot_path = None
    try:
        from cascade_router.evaluation.plots import plot_report

        plot_path = str(
            plot_report(
                split["report"],
                RESULTS / "gsm8k_cascade.png",
                title="GSM8K, Mixtral > GPT-4, learned scorer (test half, seed 0)",
            )
        )
    except ImportError:
        pass
    for m in (split, crossfit):
        m.pop("report")
    out = {
        "dataset": "RouteLLM GSM8K, 1,307 decontaminated items",
        "prices_per_mtok": PRICES,
        "scorer": "learned: cheap-answer features + hashed words, logistic regression (C=1)",
        "split_seed": SEED,
        **{k: split[k] for k in ("apgr", "cpt50", "cpt80", "escalation_rate_at_95", "savings_at_95")},
        "random": split["random"],
        "oracle": split["oracle"],
        "calibrated_on_fit_half": calibrated,
        "split": split,
        "crossfit_5": crossfit,
        "plot": plot_path,
        "seconds": time.perf_counter() - t0,
    }
    (RESULTS / "gsm8k_cascade.json").write_text(json.dumps(out, indent=2) + "\n")

    def row(name: str, m: dict[str, Any]) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.1%}"

        apgr = "-" if m["apgr"] is None else f"{m['apgr']:.3f}"
        cells = [m["cpt50"], m["cpt80"], m["escalation_rate_at_95"], m["savings_at_95"]]
        return f"| {name} | {apgr} | " + " | ".join(pct(v) for v in cells) + " |"

    print("| scorer | APGR | CPT(50%) | CPT(80%) | escalation at 95% | saving at 95% |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(row("learned, split (seed 0)", split))
    print(row("learned, 5-fold cross-fit", crossfit))
    print(row("random", split["random"]))
    print(row("oracle", split["oracle"]))
    print(
        f"\ncalibrated on the fitted half (threshold {chosen:.3f}), on the other half: quality "
        f"{calibrated['quality']:.1%} ({calibrated['quality_vs_strong']:.1%} of GPT-4), escalation "
        f"{calibrated['escalation_rate']:.1%}, saving {calibrated['savings']:.1%}"
    )
    print(f"\nwrote {RESULTS / 'gsm8k_cascade.json'} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
