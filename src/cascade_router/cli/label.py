"""``cascade-router label``: fill each recorded answer's quality."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cascade_router.backends import backend_from
from cascade_router.config import read_config_file
from cascade_router.errors import ConfigError
from cascade_router.evaluation import labelling, recording
from cascade_router.evaluation.jsonl import read_objects, write_objects


def _items(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(str(path), "no such dataset file")
    items = []
    for line_no, item in read_objects(path):
        if not isinstance(item.get("answers"), dict) or "id" not in item:
            raise ConfigError(f"{path}:{line_no}", "expected an item with an id and answers")
        items.append(item)
    if not items:
        raise ConfigError(str(path), "the dataset has no items")
    return items


def label_command(
    dataset: Annotated[Path, typer.Argument(help="The recorded answers (JSONL), labelled in place.")],
    by: Annotated[
        str,
        typer.Option(
            help="reference:exact|normalized|last-number|regex|choice|f1, judge[:provider:model], "
            "or agreement:exact|normalized|last-number|regex|choice."
        ),
    ],
    pattern: Annotated[
        str | None, typer.Option(help="The regex of reference:regex / agreement:regex.")
    ] = None,
    judge_config: Annotated[
        Path | None,
        typer.Option(help="The judge model as a mapping (YAML/JSON: provider, model, base_url...)."),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="Judge mode: score (1-10) or pairwise (vs the last rung).")
    ] = "score",
    last: Annotated[
        str | None, typer.Option(help="The rung pairwise and agreement compare with (default: the last).")
    ] = None,
    relabel: Annotated[bool, typer.Option(help="Label answers that already have a quality too.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write here instead of in place.")] = None,
    concurrency: Annotated[int, typer.Option(help="Judge calls in flight.")] = 4,
) -> None:
    """Fill each answer's quality: against the reference, by a grading model, or by agreement
    with the last rung's answer. Replies a judge states no label in leave the answer
    unlabelled (counted, never guessed)."""
    if mode not in ("score", "pairwise"):
        raise typer.BadParameter(f"--mode {mode!r}: expected score or pairwise")
    items = _items(dataset)
    models = list(items[0]["answers"])
    if last is not None:
        if last not in models:
            raise typer.BadParameter(f"--last {last!r} is not a model of the dataset; it has {models}")
        models = [m for m in models if m != last] + [last]
    judge = None
    cache = None
    kind, _, spec = by.partition(":")
    if kind == "judge":
        if judge_config is not None and spec:
            raise typer.BadParameter("give the judge as judge:provider:model or --judge-config, not both")
        if judge_config is not None:
            raw: Any = read_config_file(judge_config)
            raw = raw.get("model", raw) if isinstance(raw, dict) else raw
            inner = backend_from(raw, str(judge_config))
        elif spec:
            inner = backend_from(spec, "--by")
        else:
            raise typer.BadParameter(
                "--by judge needs the judge: judge:provider:model or --judge-config FILE"
            )
        # Judge calls are cached beside the dataset, so labelling again does not pay twice.
        cache = recording.CallCache(dataset.with_name(dataset.name + ".cache.jsonl"))
        judge = recording.RecordingBackend(
            inner, cache, recording.Limits(concurrency=concurrency), recording.RecordStats()
        )
        by = "judge"
    labeller = labelling.Labeller(
        by,
        pattern=pattern,
        judge=judge,
        judge_mode="pairwise" if mode == "pairwise" else "score",
        relabel=relabel,
        concurrency=concurrency,
    )

    async def run() -> labelling.LabelStats:
        try:
            return await labeller.label(items, models)
        finally:
            if judge is not None:
                await judge.aclose()  # the judge's async client, in its own loop

    try:
        stats = asyncio.run(run())
    finally:
        if cache is not None:
            cache.close()
    target = out or dataset
    write_objects(target, items)
    console, err = Console(), Console(stderr=True)
    console.print(
        f"labelled {stats.labelled} answers by {labeller.name}; kept {stats.kept} labelled before"
        + ("" if relabel else " (--relabel to redo them)")
        + f"; wrote {target}",
        markup=False,
        soft_wrap=True,
    )
    if stats.judge_calls:
        cost = "unknown" if stats.judge_cost_usd is None else f"${stats.judge_cost_usd:.4f}"
        console.print(
            f"judge: {stats.judge_calls} calls, {stats.judge_input_tokens} input and "
            f"{stats.judge_output_tokens} output tokens, cost {cost}",
            markup=False,
            soft_wrap=True,
        )
    left = stats.unreadable + stats.failed + stats.no_reference
    if left:
        err.print(
            f"left unlabelled: {stats.unreadable} unreadable judge replies, {stats.failed} failed judge "
            f"calls, {stats.no_reference} items without a reference",
            markup=False,
            soft_wrap=True,
        )
        for line in stats.examples:
            err.print(f"  {line}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("label")(label_command)
