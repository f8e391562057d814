"""Does a pre-router pay? The learned difficulty model in front of the GSM8K cascade.

10 seeded 50/50 splits of the built-in GSM8K (RouteLLM's recorded Mixtral-8x7B and GPT-4
answers). On each split, on the first half only: the learned scorer is fitted, the half gets
cross-fitted scores (5 folds), the cascade's threshold is calibrated for 95 % of GPT-4's quality
(``calibrate``), each request's outcome on Mixtral is "accepted and right" or not, and the
pre-router is fitted on the requests alone (cross-fitted on the half to choose its threshold:
the most Mixtral calls saved at <= +2 % cost and no quality loss, ``learn --pre-router``). The
second half then runs the cascade without and with the pre-router.

Reported, medians over the seeds:

- ``prerouter_apgr``: the pre-router used as a router by itself (the lowest-scored share to GPT-4,
  the rest answered by Mixtral unchecked), APGR on the exact curve; with RouteLLM's best
  published GSM8K router (0.622) beside it;
- at the operating point chosen on the first half: ``cheap_calls_saved`` (share of Mixtral calls
  not made), ``quality_delta_points``, ``cost_delta_share``, and the latency saved per request
  that reached GPT-4, at the latency benchmark's stated rates (Mixtral 0.3 s to first token then
  100 tokens/s; GPT-4 0.6 s then 40 tokens/s; calls one after another);
- the Pareto over skip shares of the second half (the threshold set to skip 0-30 % of it);
- all of it again at gpt-4o-mini -> gpt-4o list prices, a pricier first rung relative to the last.

    .venv/bin/python benchmarks/prerouter.py [--seeds 10] [--variant logistic|knn]

Writes benchmarks/results/prerouter.json (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from cascade_router.config import LadderConfig
from cascade_router.evaluation import calibration, demo, prerouting
from cascade_router.evaluation import metrics as ev
from cascade_router.evaluation.datasets import Dataset
from cascade_router.pricing import Price
from cascade_router.routing import difficulty
from cascade_router.scorers.learned import LearnedScorer, cross_fit, fit

RESULTS = Path(__file__).parent / "results" / "prerouter.json"
TARGET = 0.95
MAX_COST_INCREASE = 0.02
SKIP_SHARES = (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3)
PRICE_SETS = {
    # RouteLLM's, as in every GSM8K figure of this project: GPT-4 costs 42x (input) to 125x
    # (output) what Mixtral does.
    "mixtral_gpt4": demo.PRICES,
    # OpenAI's list prices per million tokens (openai.com/api/pricing, as in genai-prices):
    # gpt-4o-mini 0.15 / 0.60, gpt-4o 2.50 / 10.00, a ratio of about 17x.
    "gpt4o_mini_gpt4o": {
        demo.WEAK: {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
        demo.STRONG: {"input_per_mtok": 2.50, "output_per_mtok": 10.00},
    },
}
RATES = {demo.WEAK: (0.3, 100.0), demo.STRONG: (0.6, 40.0)}
"""(seconds to first token, tokens per second) per model: the latency benchmark's stated rates."""


def priced(config: LadderConfig, prices: dict[str, dict[str, float]]) -> LadderConfig:
    rungs = [r.model_copy(update={"price": Price(**prices[str(r.model)])}) for r in config.rungs]
    return config.model_copy(update={"rungs": rungs})


def latencies(ds: Dataset, ids: list[str]) -> list[list[float | None]]:
    out: list[list[float | None]] = []
    for i in ids:
        row: list[float | None] = []
        for model in (demo.WEAK, demo.STRONG):
            first, rate = RATES[model]
            tokens = ds.get(i).answers[model].output_tokens
            row.append(None if tokens is None else first + tokens / rate)
        out.append(row)
    return out


def escalated_latency_saved(
    without: list[ev.Outcome], with_: list[ev.Outcome], lat: list[list[float | None]]
) -> float:
    """Mean seconds saved per request that reached GPT-4 with the pre-router."""
    saved = []
    for a, b, row in zip(without, with_, lat, strict=True):
        if b.reached_last:
            before = sum(row[r] or 0.0 for r in a.called)
            after = sum(row[r] or 0.0 for r in b.called)
            saved.append(before - after)
    return statistics.mean(saved) if saved else 0.0


def one_split(seed: int, variant: difficulty.Variant) -> dict[str, Any]:
    ds = Dataset.load(demo.DATASET)
    fit_ids, run_ids = demo.split(ds, seed)
    first, second = ds.subset(fit_ids), ds.subset(run_ids)
    train = demo.examples(ds, fit_ids)
    scorer = LearnedScorer(model=fit(train))
    crossfitted = cross_fit(train, folds=5, seed=seed)
    base = demo.gsm8k_ladder(scorer)
    cal = ev.replay_ladder(base, first)
    cal_probes = ev.with_scores(ev.probe(cal, first), crossfitted)
    threshold = calibration.choose(cal.engine, cal_probes, calibration.Target("quality", TARGET)).thresholds[
        0
    ]
    ladder = demo.gsm8k_ladder(scorer, threshold)
    texts_a = [str(ds.get(i).request) for i in fit_ids]
    texts_b = [str(ds.get(i).request) for i in run_ids]
    lat_b = latencies(ds, run_ids)
    row: dict[str, Any] = {"seed": seed, "cascade_threshold": threshold}
    for prices_name, prices in PRICE_SETS.items():
        config = priced(ladder, prices)
        a = ev.replay_ladder(config, first)
        a_probes = ev.with_scores(ev.probe(a, first), crossfitted)
        b = ev.replay_ladder(config, second)
        b_probes = ev.probe(b, second)
        outcomes = prerouting.rung_outcomes(a.engine, a_probes, 0.5)
        # What the pre-router is judged on as a router: P(Mixtral accepted and right); and the
        # strong model's P(right), to rank by the advantage of calling Mixtral first.
        targets = {**outcomes, "gpt-4": [p.qualities[-1] >= 0.5 for p in a_probes]}
        held = difficulty.cross_fit(texts_a, targets, folds=5, seed=seed, variant=variant)
        a_pred = [{"mixtral": held["mixtral"][i]} for i in range(len(texts_a))]
        chosen_t, _ = prerouting.choose_threshold(
            a.engine, a_probes, a_pred, max_cost_increase=MAX_COST_INCREASE
        )
        model = difficulty.fit(texts_a, targets, variant=variant)
        b_all = [model.predict(x) for x in model.embed(texts_b)]
        b_pred = [{"mixtral": p["mixtral"]} for p in b_all]
        at = prerouting.compare(b.engine, b_probes, b_pred, chosen_t, lat_b)
        base_out = ev.simulate(b.engine, b_probes, [None, None])
        with_out = ev.simulate(b.engine, b_probes, [None, None], prerouting.skips(b.engine, b_pred, chosen_t))
        weak = [p.qualities[0] for p in b_probes]
        strong = [p.qualities[-1] for p in b_probes]
        result: dict[str, Any] = {
            "threshold": chosen_t,
            "cheap_calls_saved": at.cheap_calls_saved,
            "quality_delta_points": 100 * at.quality_delta,
            "cost_delta_share": at.cost_delta_share,
            "latency_saved_per_escalated_s": escalated_latency_saved(base_out, with_out, lat_b),
            "cascade_quality": at.without.quality,
            "cascade_cost_usd": at.without.cost_usd,
        }
        if prices_name == "mixtral_gpt4":
            result["prerouter_apgr"] = prerouting.router_apgr([p["mixtral"] for p in b_pred], weak, strong)
            result["advantage_apgr"] = prerouting.router_apgr(
                [p["mixtral"] - p["gpt-4"] for p in b_all], weak, strong
            )
            auroc = ev.auroc([p["mixtral"] for p in b_pred], [o >= 0.5 for o in weak])
            result["auroc_mixtral_right"] = auroc
        ranked = sorted(p["mixtral"] for p in b_pred)
        pareto = []
        for share in SKIP_SHARES:
            t = 0.0 if share == 0 else ranked[round(share * len(ranked))]
            c = prerouting.compare(b.engine, b_probes, b_pred, t, lat_b)
            pareto.append(
                {
                    "skip_share": share,
                    "cheap_calls_saved": c.cheap_calls_saved,
                    "quality_delta_points": 100 * c.quality_delta,
                    "cost_delta_share": c.cost_delta_share,
                    "latency_saved_s": c.latency_saved_s,
                }
            )
        result["pareto"] = pareto
        row[prices_name] = result
    return row


def median(rows: list[dict[str, Any]], path: list[str]) -> float:
    values = []
    for r in rows:
        v: Any = r
        for key in path:
            v = v[key]
        values.append(v)
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--variant", choices=["logistic", "knn"], default="logistic")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = [one_split(seed, args.variant) for seed in range(args.seeds)]
    summary: dict[str, Any] = {}
    for prices_name in PRICE_SETS:
        keys = [
            "cheap_calls_saved",
            "quality_delta_points",
            "cost_delta_share",
            "latency_saved_per_escalated_s",
        ]
        s = {k: median(rows, [prices_name, k]) for k in keys}
        s["pareto"] = [
            {
                k: statistics.median(r[prices_name]["pareto"][j][k] for r in rows)
                for k in rows[0][prices_name]["pareto"][j]
            }
            for j in range(len(SKIP_SHARES))
        ]
        summary[prices_name] = s
    main_prices = summary["mixtral_gpt4"]
    out = {
        "dataset": "RouteLLM GSM8K, 1,307 decontaminated items",
        "protocol": "seeded 50/50 splits; everything fitted and chosen on the first half, "
        "measured on the second",
        "command": ".venv/bin/python benchmarks/prerouter.py",
        "variant": args.variant,
        "seeds": args.seeds,
        "max_cost_increase": MAX_COST_INCREASE,
        "prerouter_apgr": median(rows, ["mixtral_gpt4", "prerouter_apgr"]),
        "advantage_apgr": median(rows, ["mixtral_gpt4", "advantage_apgr"]),
        "routellm_best_gsm8k_apgr": 0.622,
        "auroc_mixtral_right": median(rows, ["mixtral_gpt4", "auroc_mixtral_right"]),
        "cheap_calls_saved": main_prices["cheap_calls_saved"],
        "quality_delta_points": main_prices["quality_delta_points"],
        "cost_delta_share": main_prices["cost_delta_share"],
        "by_prices": summary,
        "prices_per_mtok": PRICE_SETS,
        "seconds": round(time.perf_counter() - t0, 1),
        "per_seed": rows,
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"pre-router APGR (as a router by itself): {out['prerouter_apgr']:.3f} "
        f"(ranking by advantage over GPT-4: {out['advantage_apgr']:.3f}; RouteLLM's best: 0.622)"
    )
    for name, s in summary.items():
        print(
            f"{name}: at <= +{MAX_COST_INCREASE:.0%} cost (chosen on the fit half): cheap calls saved "
            f"{s['cheap_calls_saved']:.1%}, quality {s['quality_delta_points']:+.2f} points, cost "
            f"{s['cost_delta_share']:+.2%}, latency saved per escalated request "
            f"{s['latency_saved_per_escalated_s']:.3f} s"
        )
        for p in s["pareto"]:
            print(
                f"  skip {p['skip_share']:5.1%}: cheap calls saved {p['cheap_calls_saved']:.1%}, quality "
                f"{p['quality_delta_points']:+.2f} pts, cost {p['cost_delta_share']:+.2%}, "
                f"latency saved {p['latency_saved_s']:.3f} s/request"
            )
    print(f"wrote {RESULTS} in {out['seconds']} s")


if __name__ == "__main__":
    main()
