"""``cascade-router eval | calibrate | compare | learn``: offline evaluation on recorded answers."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cascade_router.config import LadderConfig, load_config, read_config_file
from cascade_router.evaluation import calibration
from cascade_router.evaluation import metrics as ev
from cascade_router.evaluation.datasets import Dataset

ConfigPath = Annotated[
    Path, typer.Option("--config", help="The ladder (YAML, TOML or JSON); models name the dataset's.")
]
DatasetArg = Annotated[
    str, typer.Option("--dataset", help="A JSONL dataset (see docs/evaluation.md) or builtin:routellm-gsm8k.")
]
DatasetOpt = Annotated[
    str | None,
    typer.Option("--dataset", help="A JSONL dataset (see docs/evaluation.md) or builtin:routellm-gsm8k."),
]
LogOpt = Annotated[
    str | None,
    typer.Option("--log", help="Use a decision log instead (stored content and per-rung feedback)."),
]


def _data(dataset: str | None, log: str | None) -> Dataset:
    if (dataset is None) == (log is None):
        raise typer.BadParameter("give exactly one of --dataset and --log")
    if dataset is not None:
        return Dataset.load(dataset)
    from cascade_router.evaluation.datasets import dataset_from_log
    from cascade_router.observability.decision_log import DecisionLog

    assert log is not None
    return dataset_from_log(DecisionLog(log).iter_records(), name="decision log")


Concurrency = Annotated[int, typer.Option(help="Items evaluated at once.")]
Seed = Annotated[int, typer.Option(help="Seed of the split, the bootstrap and the random baseline.")]


def _probe(
    config: LadderConfig, dataset: Dataset, concurrency: int, label: str
) -> tuple[Any, list[ev.ItemProbe]]:
    cascade = ev.replay_ladder(config, dataset)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=len(dataset))
        probes = asyncio.run(
            ev.aprobe(cascade, dataset, concurrency=concurrency, progress=lambda n: progress.advance(task, n))
        )
    return cascade, probes


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _usd(v: float | None) -> str:
    return "unknown" if v is None else f"${v:.6f}"


def _quality(value: float | None, percent: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if percent else f"{value:.3g}"


def _between(interval: dict[str, float | None] | None, fmt: str) -> str:
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return ""
    return f" [{fmt.format(interval['low'])}, {fmt.format(interval['high'])}]"


def markdown(
    report: ev.Report,
    *,
    percent: bool = True,
    intervals: dict[str, dict[str, float | None]] | None = None,
) -> str:
    """The eval report; qualities as percentages when the dataset's are in [0, 1], else on the
    dataset's own scale (a 1-10 grade is shown as 7.4, not 740 %)."""
    c, m = report.configured, report.metrics
    cheap, strong = report.references["cheap_only"], report.references["strong_only"]

    def q(value: float | None) -> str:
        return _quality(value, percent)

    lines = [
        f"# Evaluation: {' > '.join(report.ladder)} on {report.dataset} ({report.items} items)",
        "",
        "| | quality | cost / request | reaches last rung |",
        "| --- | --- | --- | --- |",
        f"| configured thresholds | {q(c.quality)} | {_usd(c.cost_usd)} | {_pct(c.strong_share)} |",
        f"| first rung only | {q(cheap.quality)} | {_usd(cheap.cost_usd)} | 0.0% |",
        f"| last rung only | {q(strong.quality)} | {_usd(strong.cost_usd)} | 100.0% |",
        "",
        "Answered per rung: " + ", ".join(f"{k} {_pct(v)}" for k, v in report.answered_share.items()),
    ]
    if m:
        iv = intervals or {}
        lines += [
            "",
            "| APGR | random APGR | oracle APGR | CPT(50%) | CPT(80%) | escalation at 95% | saving at 95% |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {m['apgr']:.3f}{_between(iv.get('apgr'), '{:.3f}')} | {m['random_apgr']:.3f} | "
            f"{m['oracle_apgr']:.3f} | {_pct(m['cpt50'])}{_between(iv.get('cpt50'), '{:.1%}')} | "
            f"{_pct(m['cpt80'])}{_between(iv.get('cpt80'), '{:.1%}')} | {_pct(m['escalation_rate_at_95'])} | "
            f"{_pct(m['savings_at_95'])} |",
            "",
            "Curve metrics sweep the first rung's threshold over the scores' quantiles (RouteLLM's "
            "protocol); they are measured on this dataset: a learned scorer must not have been fitted on it "
            "(or use --scores cross-fit). The oracle escalates the items the last rung gains most on first."
            + (" Brackets: 95 % bootstrap intervals over items." if iv else ""),
        ]
    return "\n".join(lines) + "\n"


def _crossfit_scores(ladder: LadderConfig, data: Dataset) -> list[float]:
    """The first rung's out-of-fold scores stored by ``learn --cross-fit K``, in item order."""
    from cascade_router.scorers.learned import LearnedScorer

    scorer = ladder.rungs[0].scorer
    if not isinstance(scorer, LearnedScorer):
        raise typer.BadParameter("--scores cross-fit needs a learned scorer on the first rung")
    stored = scorer.fitted.info.get("crossfit_scores")
    if not isinstance(stored, dict):
        raise typer.BadParameter(
            "the first rung's scorer file holds no cross-fitted scores: learn it with --cross-fit K"
        )
    missing = [item.id for item in data if item.id not in stored]
    if missing:
        raise typer.BadParameter(
            f"the scorer's cross-fitted scores do not cover {len(missing)} items (first: {missing[0]!r}): "
            "it was learned on other data"
        )
    return [float(stored[item.id]) for item in data]


def eval_command(
    config: ConfigPath,
    dataset: DatasetArg,
    out: Annotated[Path, typer.Option(help="Folder for eval.md, eval.json and eval.png.")] = Path(
        "eval-results"
    ),
    scores: Annotated[
        str,
        typer.Option(
            help="configured: the first rung's scorer scores every item; cross-fit: the out-of-fold "
            "scores `learn --cross-fit K` stored (a learned scorer measured on the data it was fitted on)."
        ),
    ] = "configured",
    resamples: Annotated[
        int, typer.Option(help="Bootstrap resamples of the APGR / CPT intervals (0: none).")
    ] = 200,
    items: Annotated[Path | None, typer.Option(help="Also write each item's outcome here (JSONL).")] = None,
    concurrency: Concurrency = 16,
    seed: Seed = 0,
    pre_router: Annotated[
        Path | None,
        typer.Option(
            "--pre-router",
            help="Also run the ladder with this pre-router (learn --pre-router) in front: quality, cost, "
            "first-rung calls and latency saved, with and without.",
        ),
    ] = None,
    pre_router_threshold: Annotated[
        float | None, typer.Option(help="The pre-router's threshold (default: the one its file holds).")
    ] = None,
) -> None:
    """Run a ladder over recorded answers: quality, cost, escalation, APGR/CPT, and a plot."""
    if scores not in ("configured", "cross-fit"):
        raise typer.BadParameter(f"--scores {scores!r}: expected configured or cross-fit")
    ladder = load_config(config)
    data = Dataset.load(dataset)
    cascade, probes = _probe(ladder, data, concurrency, "evaluating")
    if scores == "cross-fit":
        probes = ev.with_scores(probes, _crossfit_scores(ladder, data))
    report = ev.report(cascade, probes, data.name, seed=seed)
    intervals = (
        ev.bootstrap_curve_metrics(cascade.engine, probes, resamples=resamples, seed=seed)
        if report.metrics and resamples > 0
        else {}
    )
    qualities = [q for p in probes for q in p.qualities]
    percent = min(qualities) >= 0 and max(qualities) <= 1
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report, percent=percent, intervals=intervals)
    saved = {**report.as_dict(), "scores": scores, "intervals": intervals}
    if pre_router is not None:
        comparison = _with_prerouter(cascade, probes, data, pre_router, pre_router_threshold)
        saved["pre_router"] = comparison.as_dict()
        text += "\n" + _prerouter_markdown(comparison, percent)
    (out / "eval.md").write_text(text)
    (out / "eval.json").write_text(json.dumps(saved, indent=2) + "\n")
    if items is not None:
        with items.open("w", encoding="utf-8") as f:
            for row in ev.item_outcomes(cascade.engine, probes):
                f.write(json.dumps(row) + "\n")
    plotted = ""
    try:
        from cascade_router.evaluation.plots import plot_report

        plotted = f", {plot_report(report, out / 'eval.png')}"
    except ImportError as exc:
        Console(stderr=True).print(f"[yellow]no plot: {exc}[/yellow]")
    typer.echo(text)  # plain: Markdown must not be re-wrapped to the terminal's width
    Console(stderr=True).print(
        f"wrote {out / 'eval.md'}, {out / 'eval.json'}{plotted}" + (f", {items}" if items else ""),
        markup=False,
    )


def _calibrate_prerouters(
    ladder: LadderConfig,
    raw: dict[str, Any],
    cal: tuple[Any, list[ev.ItemProbe], Dataset],
    held: tuple[Any, list[ev.ItemProbe], Dataset],
    thresholds: list[float | None],
    max_cost_increase: float,
) -> dict[str, dict[str, Any]]:
    """The threshold of each ``pre_router`` rule, chosen on the calibration data with the rungs'
    chosen thresholds and written into ``raw``; what it does on the held-out data."""
    from cascade_router.evaluation import prerouting
    from cascade_router.routing import PreRouterRule

    out: dict[str, dict[str, Any]] = {}
    for i, rule in enumerate(ladder.routing):
        if not isinstance(rule, PreRouterRule):
            continue
        results = []
        for cascade, probes, data in (cal, held):
            results.append((cascade.engine, probes, prerouting.predict(rule, data)))
        chosen, _ = prerouting.choose_threshold(
            *results[0], max_cost_increase=max_cost_increase, thresholds=thresholds
        )
        on_held = prerouting.compare(*results[1], chosen, thresholds=thresholds)
        raw["routing"][i]["threshold"] = chosen
        cost = on_held.cost_delta_share
        out[f"routing[{i}]"] = {
            "held_out": on_held.as_dict(),
            "summary": f"pre-router routing[{i}]: threshold {chosen:.4f} (at most {max_cost_increase:+.1%} "
            f"cost, no quality loss, on the calibration data); held-out: first-rung calls saved "
            f"{on_held.cheap_calls_saved:.1%}, quality {on_held.quality_delta:+.4g}, cost "
            f"{'unknown' if cost is None else f'{cost:+.2%}'}",
        }
    return out


def _with_prerouter(
    cascade: Any, probes: list[ev.ItemProbe], data: Dataset, path: Path, threshold: float | None
) -> Any:
    from cascade_router.evaluation import prerouting
    from cascade_router.routing import PreRouterRule

    rule = PreRouterRule(path=str(path))
    engine = cascade.engine
    rule.check_rungs([r.name for r in engine.rungs], "--pre-router")
    predictions = prerouting.predict(rule, data)
    chosen = (
        threshold
        if threshold is not None
        else {r.name: rule.threshold_for(r.name) for r in engine.rungs[:-1]}
    )
    # The recorded latencies (a replay's own take no time); None where the dataset has none.
    names = [str(b.model) for b in cascade.backends]
    latencies = [[data.get(p.item_id).answers[n].latency_s for n in names] for p in probes]
    return prerouting.compare(engine, probes, predictions, chosen, latencies)


def _prerouter_markdown(c: Any, percent: bool) -> str:
    def row(label: str, f: Any) -> str:
        latency = "-" if f.latency_s is None else f"{f.latency_s:.3f} s"
        return (
            f"| {label} | {_quality(f.quality, percent)} | {_usd(f.cost_usd)} | {_pct(f.first_rung_calls)} | "
            f"{_pct(f.reached_last)} | {latency} |"
        )

    cost = c.cost_delta_share
    latency = c.latency_saved_s
    return "\n".join(
        [
            "## With the pre-router",
            "",
            "| | quality | cost / request | first rung called | reaches last rung | latency / request |",
            "| --- | --- | --- | --- | --- | --- |",
            row("without", c.without),
            row("with the pre-router", c.with_prerouter),
            "",
            f"First-rung calls saved {_pct(c.cheap_calls_saved)}; quality {c.quality_delta:+.4g}; cost "
            f"{'unknown' if cost is None else f'{cost:+.2%}'}; latency saved "
            f"{'unknown (no recorded latencies)' if latency is None else f'{latency:.3f} s per request'}.",
            "",
        ]
    )


def _split(data: Dataset, share: float, seed: int) -> tuple[Dataset, Dataset]:
    ids = [item.id for item in data]
    random.Random(seed).shuffle(ids)
    k = max(1, min(len(ids) - 1, round(share * len(ids))))
    return data.subset(sorted(ids[:k])), data.subset(sorted(ids[k:]))


def _interval(v: ev.Interval, fmt: str = "{:.1%}") -> str:
    return f"{fmt.format(v.mean)} [{fmt.format(v.low)}, {fmt.format(v.high)}]"


def _print_held_out(console: Console, report: calibration.HeldOut, ladder: LadderConfig) -> None:
    first = ladder.rungs[0].name or str(ladder.rungs[0].model)
    last = ladder.rungs[-1].name or str(ladder.rungs[-1].model)
    rows = [
        ("quality", _interval(report.quality, "{:.4g}")),
        (f"vs {last} alone", _interval(report.versus_last)),
        (f"vs {first} alone", _interval(report.versus_first)),
        ("escalation", _interval(report.escalation)),
    ]
    if report.cost_usd is None:
        rows.append(("cost / request", "unknown (a rung has no price)"))
    else:
        rows.append(("cost / request", _interval(report.cost_usd, "${:.6f}")))
        rows.append(
            (
                f"cost vs {last} alone",
                "- (it costs nothing)"
                if report.cost_versus_last is None
                else _interval(report.cost_versus_last),
            )
        )
    width = max(len(label) for label, _ in rows)
    console.print(f"held-out ({report.items} items), 95 % bootstrap intervals over items:", markup=False)
    for label, value in rows:
        console.print(f"  {label:<{width}}  {value}", markup=False, soft_wrap=True)


def _drift_reference(probes: list[ev.ItemProbe], threshold: float | None) -> dict[str, Any] | None:
    """The first rung's score deciles and accepted share on the calibration data."""
    from cascade_router.observability.drift import decile_edges

    if threshold is None:
        return None
    scores = [a.score for p in probes if (a := p.attempts[0]).score is not None and a.method != "validity"]
    if len(scores) < 10:
        return None
    return {
        "score_edges": decile_edges(scores),
        "accepted_share": sum(s >= threshold for s in scores) / len(scores),
        "items": len(scores),
    }


def calibrate_command(
    config: ConfigPath,
    target: Annotated[
        str,
        typer.Option(
            help="quality=0.95 | escalation=0.3 | cost=0.002; with --guaranteed: quality=0.95 or loss=ε"
        ),
    ],
    dataset: DatasetOpt = None,
    calibration_file: Annotated[
        str | None,
        typer.Option("--calibration", help="Choose on this dataset (with --test: report on that one)."),
    ] = None,
    test_file: Annotated[
        str | None, typer.Option("--test", help="Report the chosen thresholds on this dataset.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the calibrated ladder (YAML).")] = Path(
        "calibrated.yaml"
    ),
    guaranteed: Annotated[
        bool,
        typer.Option(help="Learn-then-Test: with probability >= 1-δ, the expected quality loss is <= ε."),
    ] = False,
    delta: Annotated[float, typer.Option(help="Allowed failure probability of the guarantee.")] = 0.1,
    bound: Annotated[
        str, typer.Option(help="The guaranteed mode's test: betting (tight) or hoeffding.")
    ] = "betting",
    calibration_share: Annotated[
        float, typer.Option(help="With --dataset: the share of items used to choose.")
    ] = 0.5,
    report: Annotated[
        Path | None, typer.Option(help="Also write the choice and the held-out figures as JSON here.")
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the held-out intervals.")] = 2000,
    log: LogOpt = None,
    concurrency: Concurrency = 16,
    seed: Seed = 0,
    pre_router_cost: Annotated[
        float,
        typer.Option(
            help="A pre_router rule in the ladder gets the threshold that saves the most first-rung calls "
            "at this much more cost (a share) and no quality loss, with the chosen rung thresholds."
        ),
    ] = 0.02,
) -> None:
    """Choose thresholds that meet a target on calibration data; report them on held-out data.

    Data: --calibration FILE --test FILE (choose on one, report on the other), or --dataset
    FILE / --log URL split in two (--calibration-share, --seed). With --log, the items are
    logged requests whose every rung's answer was stored and labelled, and each rung of
    --config replays the logged rung of the same name."""
    goal = calibration.Target.parse(target)
    if goal.kind == "loss" and not guaranteed:
        raise typer.BadParameter("loss=ε is the guaranteed mode's target: add --guaranteed")
    if guaranteed and goal.kind not in ("loss", "quality"):
        raise typer.BadParameter("--guaranteed takes --target quality=F or loss=ε")
    if bound not in ("betting", "hoeffding"):
        raise typer.BadParameter(f"--bound {bound!r}: expected betting or hoeffding")
    ladder = load_config(config)
    if calibration_file is not None or test_file is not None:
        if calibration_file is None or test_file is None or dataset is not None or log is not None:
            raise typer.BadParameter("give --calibration and --test together, without --dataset or --log")
        cal, held = Dataset.load(calibration_file), Dataset.load(test_file)
        split_note = f"chosen on {cal.name} ({len(cal)} items)"
    else:
        data = _data(dataset, log)
        if log is not None:
            ladder, data = _replay_logged(ladder, data)
        cal, held = _split(data, calibration_share, seed)
        split_note = f"chosen on {len(cal)} of {len(data)} items (share {calibration_share}, seed {seed})"
    cascade, cal_probes = _probe(ladder, cal, concurrency, "calibration data")
    console = Console()
    epsilon = goal.value
    if guaranteed and goal.kind == "quality":
        # "quality=0.95": lose at most 5 % of the last rung's mean quality, on the [0, 1] scale
        # the guarantee's loss uses.
        qualities = [q for p in cal_probes for q in p.qualities]
        span = (max(qualities) - min(qualities)) or 1.0
        strongest = sum(p.qualities[-1] - min(qualities) for p in cal_probes) / len(cal_probes) / span
        epsilon = (1 - goal.value) * strongest
    try:
        if guaranteed:
            choice = calibration.guaranteed(
                cascade.engine,
                cal_probes,
                epsilon=epsilon,
                delta=delta,
                bound=bound,  # type: ignore[arg-type]
            )
        else:
            choice = calibration.choose(cascade.engine, cal_probes, goal)
    except calibration.GuaranteeError as exc:
        Console(stderr=True).print(f"refused: {exc}", markup=False)
        raise typer.Exit(1) from None
    held_cascade, held_probes = _probe(ladder, held, concurrency, "held-out data")
    scored = [i for i, r in enumerate(held_cascade.engine.rungs[:-1]) if r.scorer is not None]
    thresholds: list[float | None] = [None] * len(held_cascade.engine.rungs)
    for i, chosen in zip(scored if not guaranteed else [0], choice.thresholds, strict=True):
        thresholds[i] = chosen
    figures = calibration.held_out(
        held_cascade.engine, held_probes, thresholds, resamples=resamples, seed=seed
    )
    raw = read_config_file(config)
    for i, t in enumerate(thresholds):
        if t is not None:
            raw["rungs"][i]["threshold"] = min(1.0, t)  # exact: a rounded threshold is another choice
    reference = _drift_reference(cal_probes, thresholds[0])
    if reference is not None:
        # What live traffic is compared with to notice drift (only the first rung: it sees every
        # request, as it did here; a later rung's live traffic is only what escalated to it).
        old_reference = raw["rungs"][0].get("calibration") or {}
        settings = {k: old_reference[k] for k in ("window", "psi_alert", "share_alert") if k in old_reference}
        # A guaranteed threshold is a floor for adapt_thresholds: lower, the guarantee is void.
        raw["rungs"][0]["calibration"] = {**reference, **settings, "guaranteed": bool(guaranteed)}
    prerouted = _calibrate_prerouters(
        ladder,
        raw,
        (cascade, cal_probes, cal),
        (held_cascade, held_probes, held),
        thresholds,
        pre_router_cost,
    )
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    mode = f" (guaranteed, {bound} test, δ={delta})" if guaranteed else ""
    console.print(
        f"target {target}{mode}: {'met' if choice.met else 'NOT met'} on the calibration data; {split_note}",
        markup=False,
    )
    certificate = choice.certificate
    if certificate is not None:
        console.print(
            f"certified: expected quality loss vs the last rung <= {certificate.certified_loss:.4f} "
            f"(ε={certificate.epsilon:.4f}, on the [0, 1] scale) with probability >= {1 - delta:g}; "
            f"never escalating lost {certificate.never_escalate_loss:.4f} on the calibration data",
            markup=False,
        )
        if certificate.warning:
            Console(stderr=True).print(f"WARNING: {certificate.warning}", markup=False, style="bold yellow")
    console.print(
        "thresholds: "
        + ", ".join(
            f"{ladder.rungs[i].name or ladder.rungs[i].model}={t:.4f}"
            for i, t in enumerate(thresholds)
            if t is not None
        ),
        markup=False,
    )
    _print_held_out(console, figures, ladder)
    for line in prerouted.values():
        console.print(line["summary"], markup=False)
    if report is not None:
        report.write_text(
            json.dumps(
                {
                    "target": target,
                    "guaranteed": guaranteed,
                    "thresholds": thresholds,
                    "met_on_calibration": choice.met,
                    "calibration_items": len(cal),
                    "certificate": None if certificate is None else {**certificate.__dict__},
                    "held_out": figures.as_dict(),
                    "pre_router": {k: v["held_out"] for k, v in prerouted.items()},
                },
                indent=2,
            )
            + "\n"
        )
    console.print(f"wrote {out}" + (f", {report}" if report else ""), markup=False)


def compare_command(
    config_a: Annotated[Path, typer.Argument(help="Ladder A.")],
    config_b: Annotated[Path, typer.Argument(help="Ladder B.")],
    dataset: DatasetArg,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    concurrency: Concurrency = 16,
    seed: Seed = 0,
) -> None:
    """Two ladders on the same items, paired: quality and cost differences with 95 % intervals."""
    data = Dataset.load(dataset)
    results = []
    for label, path in (("A", config_a), ("B", config_b)):
        cascade, probes = _probe(load_config(path), data, concurrency, f"ladder {label}")
        results.append(ev.simulate(cascade.engine, probes, []))
    a, b = results
    console = Console()
    console.print(
        f"{len(data)} items of {data.name}; B - A, mean and 95 % bootstrap interval ({resamples} resamples):"
    )
    q = ev.paired_bootstrap([o.quality for o in a], [o.quality for o in b], resamples=resamples, seed=seed)
    qa, qb = sum(o.quality for o in a) / len(a), sum(o.quality for o in b) / len(b)
    console.print(f"quality: A {_pct(qa)}, B {_pct(qb)}, B - A {q.mean:+.2%} [{q.low:+.2%}, {q.high:+.2%}]")
    if all(o.cost_usd is not None for o in a + b):
        c = ev.paired_bootstrap(
            [o.cost_usd or 0.0 for o in a], [o.cost_usd or 0.0 for o in b], resamples=resamples, seed=seed
        )
        console.print(f"cost/request: B - A {c.mean:+.6f} USD [{c.low:+.6f}, {c.high:+.6f}]")
    else:
        console.print("cost: unknown (a rung has no price)")


def learn_command(
    model: Annotated[
        str | None,
        typer.Option("--model", help="Whose answers to learn: a dataset model, or a rung's name (--log)."),
    ] = None,
    dataset: DatasetOpt = None,
    log: LogOpt = None,
    out: Annotated[Path, typer.Option(help="The scorer file to write.")] = Path("scorer.json"),
    folds: Annotated[int, typer.Option(help="Folds of the cross-fitted quality estimate.")] = 5,
    cross_fit_k: Annotated[
        int | None,
        typer.Option(
            "--cross-fit",
            help="Also store every answer's out-of-fold score (K folds) in the scorer file, for "
            "eval --scores cross-fit.",
        ),
    ] = None,
    good: Annotated[
        float | None,
        typer.Option(
            help="Quality at or above which an answer counts as good (default: 0.5 for qualities in "
            "[0, 1], else the middle of the dataset's scale)."
        ),
    ] = None,
    seed: Seed = 0,
    pre_router: Annotated[
        bool,
        typer.Option(
            "--pre-router",
            help="Fit a pre-router instead: P(accepted and right) per rung of --config from the request "
            "alone (writes --out, default prerouter.json).",
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="--pre-router: the ladder whose rungs it predicts.")
    ] = None,
    variant: Annotated[
        str, typer.Option(help="--pre-router: logistic, or knn (embedding similarity over past outcomes).")
    ] = "logistic",
    max_cost_increase: Annotated[
        float,
        typer.Option(
            help="--pre-router: the threshold chosen is the one that saves most first-rung calls at this "
            "much more cost (a share) and no quality loss, on cross-fitted predictions."
        ),
    ] = 0.02,
) -> None:
    """Fit a learned scorer on a model's recorded answers (or, with --pre-router, a pre-router on
    requests and each rung's outcome); report its cross-fitted AUROC."""
    from cascade_router.scorers.learned import PREFIX_CHARS, Example, cross_fit, fit

    data = _data(dataset, log)
    if pre_router:
        if config is None:
            raise typer.BadParameter("--pre-router needs --config: the ladder whose rungs it predicts")
        if variant not in ("logistic", "knn"):
            raise typer.BadParameter(f"--variant {variant!r}: expected logistic or knn")
        target = Path("prerouter.json") if out == Path("scorer.json") else out
        _learn_prerouter(
            load_config(config), data, log, target, variant, folds, good, max_cost_increase, seed
        )
        return
    if model is None:
        raise typer.BadParameter("--model is needed (whose answers to learn), or --pre-router")
    answered = [item for item in data if model in item.answers]
    if not answered:
        known = sorted({m for item in data for m in item.answers})
        raise typer.BadParameter(f"no answers of {model!r} in the data; it has {known}")
    labelled = [item for item in answered if item.answers[model].quality is not None]
    if len(labelled) < len(answered):
        Console(stderr=True).print(
            f"{len(answered) - len(labelled)} of {len(answered)} answers of {model} have no quality "
            "yet and are left out (cascade-router label)",
            markup=False,
        )
    qualities = [q for item in data for a in item.answers.values() if (q := a.quality) is not None]
    low, high = min(qualities), max(qualities)
    console = Console()
    if good is None:
        # Graded qualities (1-10, say): the scorer learns "good" as the upper half of the scale.
        good = 0.5 if low >= 0 and high <= 1 else (low + high) / 2
        if not (low >= 0 and high <= 1):
            console.print(
                f"graded qualities from {low:g} to {high:g}: an answer counts as good at {good:g} or "
                "above (--good to choose)",
                markup=False,
            )
    examples = [
        Example(
            "\n".join(m.content for m in item.messages()),
            item.answers[model].text,
            data.quality(item.id, model) >= good,
        )
        for item in labelled
    ]
    k = cross_fit_k or folds
    held_out = cross_fit(examples, folds=k, seed=seed)
    area = ev.auroc(held_out, [e.good for e in examples])
    fitted = fit(examples, prefixes=PREFIX_CHARS, prefix_targets=held_out)
    fitted.info.update(
        {"dataset": data.name, "model": model, "crossfit_auroc": area, "folds": k, "good_at": good}
    )
    if cross_fit_k is not None:
        fitted.info["crossfit_scores"] = {item.id: s for item, s in zip(labelled, held_out, strict=True)}
    fitted.save(out)
    area_text = "undefined (all answers alike)" if area is None else f"{area:.3f}"
    stored = f"; stored {len(examples)} out-of-fold scores ({k} folds)" if cross_fit_k is not None else ""
    console.print(
        f"{len(examples)} answers of {model}: cross-fitted AUROC {area_text}{stored}; wrote {out}",
        markup=False,
    )


def _learn_prerouter(
    ladder: LadderConfig,
    data: Dataset,
    log: str | None,
    out: Path,
    variant: str,
    folds: int,
    good: float | None,
    max_cost_increase: float,
    seed: int,
) -> None:
    from cascade_router.evaluation import prerouting
    from cascade_router.routing import difficulty

    if len(ladder.rungs) < 2:
        raise typer.BadParameter("a pre-router skips rungs below the last: the ladder needs two or more")
    if log is not None:
        ladder, data = _replay_logged(ladder, data)
    cascade, probes = _probe(ladder, data, 16, "replaying the ladder")
    engine = cascade.engine
    qualities = [q for p in probes for q in p.qualities]
    good_at = good if good is not None else (0.5 if min(qualities) >= 0 and max(qualities) <= 1 else None)
    if good_at is None:
        good_at = (min(qualities) + max(qualities)) / 2
    outcomes = prerouting.rung_outcomes(engine, probes, good_at)
    texts = [prerouting.request_text(item) for item in data]
    kind: Any = variant
    held_out = difficulty.cross_fit(texts, outcomes, folds=folds, seed=seed, variant=kind)
    predictions = [{r: held_out[r][i] for r in held_out} for i in range(len(texts))]
    threshold, chosen = prerouting.choose_threshold(
        engine, probes, predictions, max_cost_increase=max_cost_increase
    )
    fitted = difficulty.fit(texts, outcomes, variant=kind)
    fitted.threshold = threshold
    areas = {r: ev.auroc(held_out[r], outcomes[r]) for r in outcomes}
    fitted.info.update(
        {
            "dataset": data.name,
            "ladder": [r.name for r in engine.rungs],
            "good_at": good_at,
            "folds": folds,
            "crossfit_auroc": areas,
            "chosen_on_crossfit": chosen.as_dict(),
            "max_cost_increase": max_cost_increase,
        }
    )
    fitted.save(out)
    console = Console()
    for rung, area in areas.items():
        rate = sum(outcomes[rung]) / len(texts)
        shown = "undefined (all alike)" if area is None else f"{area:.3f}"
        console.print(
            f"{rung}: accepted and right on {rate:.1%} of {len(texts)} requests; cross-fitted AUROC {shown}",
            markup=False,
        )
    cost = chosen.cost_delta_share
    console.print(
        f"threshold {threshold:.4f} (cross-fitted, at most {max_cost_increase:+.1%} cost, no quality loss): "
        f"first-rung calls saved {chosen.cheap_calls_saved:.1%}, quality {chosen.quality_delta:+.2%}, "
        f"cost {'unknown' if cost is None else f'{cost:+.2%}'}; wrote {out}",
        markup=False,
    )


def _replay_logged(ladder: LadderConfig, data: Dataset) -> tuple[LadderConfig, Dataset]:
    """The ladder with each rung replaying the logged rung of its name, on the items labelled for
    every rung."""
    names = [r.name for r in ladder.rungs]
    if any(n is None for n in names):
        raise typer.BadParameter("with --log, give every rung of --config the name it has in the log")
    complete = [i.id for i in data if all(n in i.answers for n in names)]
    if not complete:
        raise typer.BadParameter(
            f"no logged request has a labelled answer from every rung {names}: a cascade only calls a "
            "stronger rung when it escalates, so label requests that went up the ladder"
        )
    rungs = [r.model_copy(update={"model": f"replay:{r.name}"}) for r in ladder.rungs]
    return ladder.model_copy(update={"rungs": rungs}), data.subset(complete)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("calibrate")(calibrate_command)
    app.command("compare")(compare_command)
    app.command("learn")(learn_command)
