"""Latency of escalated requests on the built-in GSM8K ladder: ``buffered`` vs ``early_abort``.

The ladder of ``cascade-router demo``: RouteLLM's recorded answers of Mixtral-8x7B (cheap) and
GPT-4 (strong), a learned scorer fitted on one half of the items and its threshold calibrated
there for 95 % of GPT-4's quality; the other half (654 items) is measured. Each item runs
through the real engine: the cheap rung replays its recorded answer as a token stream (cl100k
tokens, as the recorded counts were made), so in ``early_abort`` mode the engine's own prefix
rule decides where to abandon it. Latencies are then simulated from the token counts at assumed
rates (wall time on this machine says nothing about a provider):

- cheap (Mixtral-8x7B): first token after ``--cheap-ttft`` s (0.3), then ``--cheap-rate`` tokens/s (100)
- strong (GPT-4 Turbo): first token after ``--strong-ttft`` s (0.6), then ``--strong-rate`` tokens/s (40)

These are the rates issue 13 assumed; they sit in the range public leaderboards reported for
these models on hosted APIs in 2024 (Mixtral on mid-speed hosts ~100 tokens/s; GPT-4 Turbo
~20-40 tokens/s, first token ~0.5-0.7 s). Pass others to see how the ratios move.

A buffered escalation costs the cheap rung's whole answer then the strong one's; an early abort
costs the cheap rung's first token and the prefix it read. The strong rung is final and streams
live in both modes, so "latency" is its time to the *last* token (the whole answer), compared with
calling the strong model alone (the same). Kept requests (answered by the cheap rung) take the
same time in both modes. Quality is the share of right answers; cost is RouteLLM's prices
(the aborted prefix billed: the prompt, plus the tokens read).

``hedged`` replays the engine's hedge rule (``HedgeSettings``: the cheap rung's p90 latency as the
delay, at most 10 % of requests hedged) on the simulated clock, alone and with ``early_abort``.

    .venv/bin/python benchmarks/latency.py [--check-every 8 --min-tokens 16 --margin 0.15]

Writes benchmarks/results/latency.json (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import bpe_openai

from cascade_router import Cascade, policy
from cascade_router.backend import BackendBase
from cascade_router.evaluation.datasets import Dataset
from cascade_router.evaluation.demo import PRICES, STRONG, WEAK, gsm8k_ladder, prepare
from cascade_router.model_io import ModelOutput, Request, Usage
from cascade_router.scorers.learned import LearnedScorer

RESULTS = Path(__file__).parent / "results" / "latency.json"
ENCODING = bpe_openai.get_encoding("cl100k_base")


class _TokenStream:
    """A recorded answer streamed token by token; ``partial`` is what an early-abort check sees."""

    def __init__(self, whole: ModelOutput, pieces: list[str]) -> None:
        self._whole = whole
        self._pieces = pieces
        self.sent = 0

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            self.sent += 1
            yield piece

    async def __aiter__(self) -> AsyncIterator[str]:
        for piece in self._pieces:
            self.sent += 1
            yield piece

    def output(self) -> ModelOutput:
        return self._whole

    def partial(self) -> ModelOutput:
        usage = self._whole.usage
        return ModelOutput(
            text="".join(self._pieces[: self.sent]),
            usage=Usage(usage.input_tokens if usage else 0, self.sent),
            model=self._whole.model,
            extra=self._whole.extra,
        )


class TokenReplay(BackendBase):
    """``model``'s recorded answers, streamed as cl100k tokens."""

    def __init__(self, dataset: Dataset, model: str) -> None:
        self.dataset = dataset
        self._model = model

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str | None:
        return None

    def _whole(self, request: Request) -> tuple[ModelOutput, list[str]]:
        item = self.dataset.find(request)
        answer = item.answers[self._model]
        output = ModelOutput(
            text=answer.text,
            raw=answer,
            usage=Usage(answer.input_tokens or 0, answer.output_tokens or 0),
            model=self._model,
            finish_reason="stop",
            extra={"item_id": item.id, "quality": answer.quality},
        )
        return output, [ENCODING.decode([t]) for t in ENCODING.encode(answer.text)]

    def invoke(self, request: Request) -> ModelOutput:
        return self._whole(request)[0]

    async def ainvoke(self, request: Request) -> ModelOutput:
        return self._whole(request)[0]

    def stream(self, request: Request) -> _TokenStream:
        return _TokenStream(*self._whole(request))

    def astream(self, request: Request) -> _TokenStream:
        return _TokenStream(*self._whole(request))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_mode(prepared: Any, early_abort: dict[str, Any] | None, rates: argparse.Namespace) -> dict[str, Any]:
    """Every held-out item through the engine; per item: who answered, the simulated latency,
    the latency of GPT-4 alone, quality and cost."""
    ds = prepared.dataset
    half = ds.subset(prepared.run_ids)
    ladder = gsm8k_ladder(LearnedScorer(model=prepared.model), prepared.threshold)
    rungs = [
        ladder.rungs[0].model_copy(update={"model": TokenReplay(half, WEAK)}),
        ladder.rungs[1].model_copy(update={"model": TokenReplay(half, STRONG)}),
    ]
    cascade = Cascade(rungs, tracing=False, early_abort=early_abort)
    items: dict[str, dict[str, Any]] = {}
    for item_id in prepared.run_ids:
        item = ds.get(item_id)
        result = cascade.invoke(item.to_request())
        cheap_tokens = item.answers[WEAK].output_tokens or 0
        strong = rates.strong_ttft + (item.answers[STRONG].output_tokens or 0) / rates.strong_rate
        read = result.attempts[0].details.get("aborted_after_chunks")
        cheap = rates.cheap_ttft + (int(read) if read is not None else cheap_tokens) / rates.cheap_rate
        escalated = result.answered_by.rung == 1
        items[item_id] = {
            "escalated": escalated,
            "aborted": read is not None,
            "cheap_s": cheap,
            "latency_s": cheap + strong if escalated else cheap,
            "strong_alone_s": strong,
            "quality": float(result.output.extra["quality"]),
            "strong_quality": float(item.answers[STRONG].quality or 0.0),
            "cost_usd": result.cost_usd or 0.0,
            "cheap_cost_usd": result.attempts[0].cost_usd or 0.0,
            "strong_input": item.answers[STRONG].input_tokens or 0,
            "strong_output": item.answers[STRONG].output_tokens or 0,
            "read": int(read) if read is not None else None,
        }
    return items


def low_prefix_points(
    prepared: Any, early_abort: dict[str, Any], prefix_margin: float
) -> dict[str, int | None]:
    """Per item, the chunk at which the engine's rule (``policy.prefix_action``, as
    ``_stream_scored`` applies it every ``check_every`` chunks) first calls for a hedge, before
    any abort; None when it never does. The replay reads the same cl100k pieces and the same
    scorer's ``score_prefix`` as the engine run."""
    ds = prepared.dataset
    half = ds.subset(prepared.run_ids)
    scorer = LearnedScorer(model=prepared.model)
    replay = TokenReplay(half, WEAK)
    points: dict[str, int | None] = {}
    for item_id in prepared.run_ids:
        request = ds.get(item_id).to_request()
        stream = replay.stream(request)
        points[item_id] = None
        for n, _ in enumerate(stream, start=1):
            if n % early_abort["check_every"]:
                continue
            check = scorer.score_prefix(request, stream.partial(), prepared.threshold)
            if check is None:
                continue
            action = policy.prefix_action(
                score=check.score,
                hopeless=check.hopeless,
                threshold=prepared.threshold,
                chunks=n,
                min_tokens=early_abort["min_tokens"],
                margin=early_abort["margin"],
                hedge_margin=prefix_margin,
            )
            if action is not None:
                points[item_id] = n if action[0] == "hedge" else None
                break
    return points


def hedge(
    items: dict[str, dict[str, Any]], delay_s: float, max_share: float, rates: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """The engine's hedge rule replayed on the simulated clock: when the cheap rung's attempt
    has not ended after ``delay_s``, and the budget (``max_share`` of the requests so far)
    allows, GPT-4 starts then; the first acceptable answer wins and the other call is cancelled
    (billed for its prompt and the tokens it generated until then)."""
    return _hedged(items, max_share, rates, lambda _, r: delay_s if r["cheap_s"] > delay_s else None)


def _hedged(
    items: dict[str, dict[str, Any]],
    max_share: float,
    rates: argparse.Namespace,
    start: Callable[[str, dict[str, Any]], float | None],
) -> dict[str, dict[str, Any]]:
    """Each item, hedged when ``start`` gives GPT-4 a start time and the budget (``max_share``
    of the requests so far) allows."""
    out: dict[str, dict[str, Any]] = {}
    requests = hedges = 0
    for item_id, r in items.items():
        requests += 1
        row = dict(r, hedged=False)
        out[item_id] = row
        started = start(item_id, r)
        if started is None or hedges + 1 > max(1.0, max_share * requests):
            continue
        hedges += 1
        _race(row, r, started, rates)
    return out


def _race(row: dict[str, Any], r: dict[str, Any], started: float, rates: argparse.Namespace) -> None:
    """``row`` (a copy of ``r``) when GPT-4 starts at ``started`` beside the cheap rung: an
    accepted cheap answer that ends first wins and GPT-4 is cancelled (billed for its prompt and
    the tokens generated until then); otherwise GPT-4 answers at its own pace from ``started``."""
    row["hedged"] = True
    strong_end = started + r["strong_alone_s"]
    if not r["escalated"] and r["cheap_s"] <= strong_end:
        generated = max(0.0, r["cheap_s"] - started - rates.strong_ttft) * rates.strong_rate
        row["cost_usd"] = r["cost_usd"] + _strong_cost(min(generated, r["strong_output"]), r["strong_input"])
        return
    row["escalated"] = True
    row["latency_s"] = strong_end
    row["quality"] = r["strong_quality"]
    row["cost_usd"] = r["cheap_cost_usd"] + _strong_cost(r["strong_output"], r["strong_input"])


def prefix_auroc(prepared: Any, tokens: tuple[int, ...] = (16, 32, 64, 128)) -> dict[str, float]:
    """How well the prefix model, after n tokens, tells the answers the whole-answer scorer
    rejects from those it accepts (AUROC over the held-out answers longer than n tokens): the
    ceiling on what any prefix rule built on it can do."""
    from sklearn.metrics import roc_auc_score

    ds = prepared.dataset
    model = prepared.model
    assert model.prefix is not None
    rows = []
    for item_id in prepared.run_ids:
        request = ds.get(item_id).to_request()
        question = "\n".join(m.content for m in request.messages if m.role != "system")
        answer = ds.get(item_id).answers[WEAK].text
        rows.append((question, ENCODING.encode(answer), model.predict(question, answer) < prepared.threshold))
    out = {}
    for n in tokens:
        cut = [(q, ids, rejected) for q, ids, rejected in rows if len(ids) > n]
        scores = [-model.prefix.predict(q, ENCODING.decode(ids[:n])) for q, ids, _ in cut]
        out[f"after_{n}_tokens"] = round(float(roc_auc_score([r for *_, r in cut], scores)), 3)
    return out


def _strong_cost(output_tokens: float, prompt: int) -> float:
    price = PRICES[STRONG]
    return (prompt * price["input_per_mtok"] + output_tokens * price["output_per_mtok"]) / 1e6


def hedge_on_prefix(
    items: dict[str, dict[str, Any]],
    points: dict[str, int | None],
    max_share: float,
    rates: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """The ``low_prefix`` hedge on the simulated clock, over an ``early_abort`` run: GPT-4 starts
    when the cheap rung's prefix first falls in the hedge band (``points``), within the budget,
    while the cheap rung goes on. An abort or rejection then waits only for the GPT-4 call
    already under way; an accepted cheap answer that ends first wins, and GPT-4 is cancelled
    (billed for its prompt and the tokens generated until then)."""

    def start(item_id: str, r: dict[str, Any]) -> float | None:
        point = points[item_id]
        return None if point is None else rates.cheap_ttft + point / rates.cheap_rate

    return _hedged(items, max_share, rates, start)


def summary(items: dict[str, dict[str, Any]], buffered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    escalated = [r["latency_s"] / r["strong_alone_s"] for r in items.values() if r["escalated"]]
    # Kept requests: those the cheap rung answers in both modes, so the two are compared on the
    # same items (a mode that escalates more keeps fewer, and different, ones).
    kept = [
        items[i]["latency_s"] / buffered[i]["latency_s"]
        for i in items
        if not items[i]["escalated"] and not buffered[i]["escalated"]
    ]
    n = len(items)
    return {
        "requests": n,
        "escalated": len(escalated),
        "aborted_early": sum(r["aborted"] for r in items.values()),
        "hedged": sum(bool(r.get("hedged")) for r in items.values()),
        "escalated_p50_vs_strong": round(_percentile(escalated, 0.5), 4),
        "escalated_p95_vs_strong": round(_percentile(escalated, 0.95), 4),
        "kept_p50_vs_buffered": round(_percentile(kept, 0.5), 4) if kept else None,
        "quality": round(sum(r["quality"] for r in items.values()) / n, 4),
        "cost_usd": round(sum(r["cost_usd"] for r in items.values()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cheap-ttft", type=float, default=0.3)
    parser.add_argument("--cheap-rate", type=float, default=100.0)
    parser.add_argument("--strong-ttft", type=float, default=0.6)
    parser.add_argument("--strong-rate", type=float, default=40.0)
    parser.add_argument("--check-every", type=int, default=8)
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--margins", default="0.15,0.3,1.0", help="early_abort margins to measure")
    parser.add_argument("--hedge-delay", type=float, default=None, help="default: the cheap rung's p90")
    parser.add_argument("--hedge-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prefix-hedges",
        default="0.3:0.1,0.3:0.15,0.3:0.2,0.4:0.25,0.4:0.3,0.6:0.0,0.6:-0.05",
        help="low_prefix hedge settings to measure, as early_abort margin:hedge prefix_margin",
    )
    parser.add_argument("--prefix-hedge", default="0.3:0.2", help="the one reported as the hedged mode")
    parser.add_argument("--prefix-hedge-share", type=float, default=1.0, help="the budget (max_share)")
    args = parser.parse_args()

    started = time.perf_counter()
    prepared = prepare(seed=args.seed)
    buffered = run_mode(prepared, None, args)
    modes: dict[str, Any] = {"buffered": summary(buffered, buffered)}
    variants = []
    for margin in (float(m) for m in args.margins.split(",")):
        settings = {"check_every": args.check_every, "min_tokens": args.min_tokens, "margin": margin}
        row = summary(run_mode(prepared, settings, args), buffered)
        variants.append({"settings": settings, **row})
    # The default settings are the "early_abort" row; the others show the trade-off.
    default = next((v for v in variants if v["settings"]["margin"] == 0.15), variants[0])
    modes["early_abort"] = default
    # The hedge delay: the cheap rung's p90 latency, as the engine observes it (delay_s unset).
    delay = args.hedge_delay or _percentile([r["cheap_s"] for r in buffered.values()], 0.9)
    hedged = hedge(buffered, delay, args.hedge_share, args)
    modes["hedged_slow"] = {
        "when": "slow",
        "delay_s": round(delay, 3),
        "max_share": args.hedge_share,
        **summary(hedged, buffered),
    }
    both = hedge(run_mode(prepared, default["settings"], args), delay, args.hedge_share, args)
    modes["early_abort+hedged_slow"] = {"delay_s": round(delay, 3), **summary(both, buffered)}
    # Selective hedging (``when: low_prefix``): GPT-4 starts only when the cheap answer's prefix
    # score falls in the band between the abort rule and the hedge rule.
    prefix_variants = []
    runs: dict[float, dict[str, dict[str, Any]]] = {}
    for pair in dict.fromkeys([*args.prefix_hedges.split(","), args.prefix_hedge]):
        margin, prefix_margin = (float(x) for x in pair.split(":"))
        settings = {"check_every": args.check_every, "min_tokens": args.min_tokens, "margin": margin}
        if margin not in runs:
            runs[margin] = run_mode(prepared, settings, args)
        points = low_prefix_points(prepared, settings, prefix_margin)
        row = summary(hedge_on_prefix(runs[margin], points, args.prefix_hedge_share, args), buffered)
        prefix_variants.append(
            {
                "early_abort": settings,
                "hedge": {
                    "when": "low_prefix",
                    "prefix_margin": prefix_margin,
                    "max_share": args.prefix_hedge_share,
                },
                **row,
                "cost_vs_buffered": round(row["cost_usd"] / modes["buffered"]["cost_usd"] - 1, 4),
                "pair": pair,
            }
        )
    chosen = next(v for v in prefix_variants if v["pair"] == args.prefix_hedge)
    modes["hedged"] = chosen
    # The floor: a perfect prefix check that abandons every answer buffered mode rejects at the
    # first check, and nothing else. No rule can do better without hedging every request.
    floor = {
        i: dict(
            r, latency_s=r["latency_s"] - r["cheap_s"] + args.cheap_ttft + args.check_every / args.cheap_rate
        )
        if r["escalated"]
        else r
        for i, r in buffered.items()
    }
    buffered_cost = modes["buffered"]["cost_usd"]
    for name in ("early_abort", "hedged_slow", "early_abort+hedged_slow"):
        modes[name]["cost_vs_buffered"] = round(modes[name]["cost_usd"] / buffered_cost - 1, 4)
    out = {
        "dataset": f"builtin:routellm-gsm8k (held-out half, seed {args.seed})",
        "threshold": prepared.threshold,
        "target": "95 % of GPT-4's quality",
        "rates": {
            "cheap": {"model": WEAK, "ttft_s": args.cheap_ttft, "tokens_per_s": args.cheap_rate},
            "strong": {"model": STRONG, "ttft_s": args.strong_ttft, "tokens_per_s": args.strong_rate},
        },
        "prices_per_mtok": PRICES,
        "modes": modes,
        "early_abort_variants": variants,
        "low_prefix_hedge_variants": prefix_variants,
        "prefix_model_auroc": prefix_auroc(prepared),
        "floor": {
            "what": "every answer buffered rejects abandoned at the first check, nothing else",
            **summary(floor, buffered),
        },
        "notes": "margin 1.0: only the scorers' own rules (a wrong stated calculation) abandon an "
        "answer. hedged: when: low_prefix over early_abort (GPT-4 started when the prefix score "
        "falls under threshold - prefix_margin, the cheap rung abandoned under threshold - margin); "
        "hedged_slow: time-based (no prefix condition). Both replay the engine's rules on the "
        "simulated clock. cost_vs_buffered: the extra cost over the buffered cascade.",
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for name, row in [
        ("buffered", modes["buffered"]),
        *((f"early_abort {v['settings']}", v) for v in variants),
        ("hedged_slow", modes["hedged_slow"]),
        ("early_abort+hedged_slow", modes["early_abort+hedged_slow"]),
        *((f"low_prefix {v['pair']}", v) for v in prefix_variants),
        ("floor", out["floor"]),
    ]:
        print(name, {k: v for k, v in row.items() if k not in ("settings", "early_abort", "hedge", "pair")})


if __name__ == "__main__":
    main()
