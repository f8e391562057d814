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


def markdown(report: ev.Report) -> str:
    c, refs, m = report.configured, report.references, report.metrics
    lines = [
        f"# Evaluation: {' > '.join(report.ladder)} on {report.dataset} ({report.items} items)",
        "",
        "| | quality | cost / request | reaches last rung |",
        "| --- | --- | --- | --- |",
        f"| configured thresholds | {_pct(c.quality)} | {_usd(c.cost_usd)} | {_pct(c.strong_share)} |",
        f"| first rung only | {_pct(refs['cheap_only'].quality)} | "
        f"{_usd(refs['cheap_only'].cost_usd)} | 0.0% |",
        f"| last rung only | {_pct(refs['strong_only'].quality)} | "
        f"{_usd(refs['strong_only'].cost_usd)} | 100.0% |",
        "",
        "Answered per rung: " + ", ".join(f"{k} {_pct(v)}" for k, v in report.answered_share.items()),
    ]
    if m:
        lines += [
            "",
            "| APGR | random APGR | oracle APGR | CPT(50%) | CPT(80%) | escalation at 95% | saving at 95% |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {m['apgr']:.3f} | {m['random_apgr']:.3f} | {m['oracle_apgr']:.3f} | {_pct(m['cpt50'])} | "
            f"{_pct(m['cpt80'])} | {_pct(m['escalation_rate_at_95'])} | {_pct(m['savings_at_95'])} |",
            "",
            "Curve metrics sweep the first rung's threshold over the scores' quantiles (RouteLLM's "
            "protocol); they are measured on this dataset: a learned scorer must not have been fitted on it.",
        ]
    return "\n".join(lines) + "\n"


def eval_command(
    config: ConfigPath,
    dataset: DatasetArg,
    out: Annotated[Path, typer.Option(help="Folder for eval.md, eval.json and eval.png.")] = Path(
        "eval-results"
    ),
    concurrency: Concurrency = 16,
    seed: Seed = 0,
) -> None:
    """Run a ladder over recorded answers: quality, cost, escalation, APGR/CPT, and a plot."""
    ladder = load_config(config)
    data = Dataset.load(dataset)
    cascade, probes = _probe(ladder, data, concurrency, "evaluating")
    report = ev.report(cascade, probes, data.name, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out / "eval.md").write_text(text)
    (out / "eval.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    plotted = ""
    try:
        from cascade_router.evaluation.plots import plot_report

        plotted = f", {plot_report(report, out / 'eval.png')}"
    except ImportError as exc:
        Console(stderr=True).print(f"[yellow]no plot: {exc}[/yellow]")
    typer.echo(text)  # plain: Markdown must not be re-wrapped to the terminal's width
    Console(stderr=True).print(f"wrote {out / 'eval.md'}, {out / 'eval.json'}{plotted}")


def _split(data: Dataset, share: float, seed: int) -> tuple[Dataset, Dataset]:
    ids = [item.id for item in data]
    random.Random(seed).shuffle(ids)
    k = max(1, min(len(ids) - 1, round(share * len(ids))))
    return data.subset(sorted(ids[:k])), data.subset(sorted(ids[k:]))


def calibrate_command(
    config: ConfigPath,
    target: Annotated[
        str, typer.Option(help="quality=0.95 | escalation=0.3 | cost=0.002 | loss=0.03 (guaranteed)")
    ],
    dataset: DatasetOpt = None,
    out: Annotated[Path, typer.Option(help="Where to write the calibrated ladder (YAML).")] = Path(
        "calibrated.yaml"
    ),
    guaranteed: Annotated[
        bool, typer.Option(help="Learn-then-Test: P(loss <= ε) >= 1-δ; needs loss=ε.")
    ] = False,
    delta: Annotated[float, typer.Option(help="Allowed failure probability of the guarantee.")] = 0.1,
    calibration_share: Annotated[float, typer.Option(help="Share of items used to choose.")] = 0.5,
    log: LogOpt = None,
    concurrency: Concurrency = 16,
    seed: Seed = 0,
) -> None:
    """Choose thresholds that meet a target on a calibration split; report them on the rest.

    With --log, the items are logged requests whose every rung's answer was stored and labelled,
    and each rung of --config replays the logged rung of the same name."""
    goal = calibration.Target.parse(target)
    if guaranteed != (goal.kind == "loss"):
        raise typer.BadParameter("--guaranteed goes with --target loss=ε, and loss=ε with --guaranteed")
    ladder = load_config(config)
    data = _data(dataset, log)
    if log is not None:
        ladder, data = _replay_logged(ladder, data)
    cal, held = _split(data, calibration_share, seed)
    cascade, cal_probes = _probe(ladder, cal, concurrency, "calibration split")
    if guaranteed:
        choice = calibration.guaranteed(cascade.engine, cal_probes, epsilon=goal.value, delta=delta)
    else:
        choice = calibration.choose(cascade.engine, cal_probes, goal)
    held_cascade, held_probes = _probe(ladder, held, concurrency, "held-out split")
    scored = [i for i, r in enumerate(held_cascade.engine.rungs[:-1]) if r.scorer is not None]
    thresholds: list[float | None] = [None] * len(held_cascade.engine.rungs)
    for i, chosen in zip(scored if not guaranteed else [0], choice.thresholds, strict=True):
        thresholds[i] = chosen
    outcomes = ev.simulate(held_cascade.engine, held_probes, thresholds)
    point = ev.summarize(outcomes, len(thresholds))
    strongest = sum(p.qualities[-1] for p in held_probes) / len(held_probes)
    raw = read_config_file(config)
    for i, t in enumerate(thresholds):
        if t is not None:
            raw["rungs"][i]["threshold"] = round(min(1.0, t), 6)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    console = Console()
    console.print(
        f"target {target}{' (guaranteed, δ=' + str(delta) + ')' if guaranteed else ''}: "
        f"{'met' if choice.met else 'NOT met'} on the calibration split ({len(cal)} items)"
    )
    console.print(
        "thresholds: "
        + ", ".join(
            f"{ladder.rungs[i].name or ladder.rungs[i].model}={t:.4f}"
            for i, t in enumerate(thresholds)
            if t is not None
        )
    )
    versus = _pct(point.quality / strongest if strongest else None)
    console.print(
        f"held-out ({len(held)} items): quality {_pct(point.quality)} ({versus} of the last rung), "
        f"escalation {_pct(calibration.escalation_rate(outcomes))}, cost/request {_usd(point.cost_usd)}"
    )
    console.print(f"wrote {out}")


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
        str,
        typer.Option("--model", help="Whose answers to learn: a dataset model, or a rung's name (--log)."),
    ],
    dataset: DatasetOpt = None,
    log: LogOpt = None,
    out: Annotated[Path, typer.Option(help="The scorer file to write.")] = Path("scorer.json"),
    folds: Annotated[int, typer.Option(help="Folds of the cross-fitted quality estimate.")] = 5,
    good: Annotated[float, typer.Option(help="Quality at or above which an answer counts as good.")] = 0.5,
    seed: Seed = 0,
) -> None:
    """Fit a learned scorer on a model's recorded answers; report its cross-fitted AUROC."""
    from cascade_router.scorers.learned import Example, cross_fit, fit

    data = _data(dataset, log)
    labelled = [item for item in data if model in item.answers]
    if not labelled:
        known = sorted({m for item in data for m in item.answers})
        raise typer.BadParameter(f"no answers of {model!r} in the data; it has {known}")
    examples = [
        Example(
            "\n".join(m.content for m in item.messages()),
            item.answers[model].text,
            item.answers[model].quality >= good,
        )
        for item in labelled
    ]
    held_out = cross_fit(examples, folds=folds, seed=seed)
    area = ev.auroc(held_out, [e.good for e in examples])
    fitted = fit(examples)
    fitted.info.update({"dataset": data.name, "model": model, "crossfit_auroc": area, "folds": folds})
    fitted.save(out)
    Console().print(f"{len(examples)} answers of {model}: cross-fitted AUROC {area:.3f}; wrote {out}")


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
