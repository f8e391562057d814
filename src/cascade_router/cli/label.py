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


def _judge(
    by: str, judge_config: Path | None, cache_path: Path, concurrency: int
) -> tuple[recording.RecordingBackend | None, recording.CallCache | None, str]:
    """The judge of ``--by judge[:provider:model]`` / ``agreement:judge`` / ``--judge-config``,
    its calls cached."""
    kind, _, spec = by.partition(":")
    if by == "agreement:judge":
        if judge_config is None:
            raise typer.BadParameter("agreement:judge needs --judge-config FILE")
        spec = ""
    elif kind != "judge":
        return None, None, by
    if judge_config is not None and spec:
        raise typer.BadParameter("give the judge as judge:provider:model or --judge-config, not both")
    if judge_config is not None:
        raw: Any = read_config_file(judge_config)
        raw = raw.get("model", raw) if isinstance(raw, dict) else raw
        inner = backend_from(raw, str(judge_config))
    elif spec:
        inner = backend_from(spec, "--by")
    else:
        raise typer.BadParameter("--by judge needs the judge: judge:provider:model or --judge-config FILE")
    # Judge calls are cached, so labelling again does not pay twice.
    cache = recording.CallCache(cache_path)
    limits = recording.Limits(concurrency=concurrency)
    judge = recording.RecordingBackend(inner, cache, limits, recording.RecordStats())
    return judge, cache, "agreement:judge" if by == "agreement:judge" else "judge"


def label_command(
    dataset: Annotated[Path, typer.Argument(help="The recorded answers (JSONL), labelled in place.")],
    by: Annotated[
        str,
        typer.Option(
            help="reference:exact|normalized|last-number|regex|choice|f1, judge[:provider:model], "
            "or agreement:exact|normalized|last-number|regex|choice|judge."
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
    judge, cache, by = _judge(by, judge_config, dataset.with_name(dataset.name + ".cache.jsonl"), concurrency)
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


def _as_feedback(quality: float, labelled_by: str) -> float:
    """A label as the decision log's feedback score, in [0, 1]: a judge's 1-10 score is rescaled."""
    if labelled_by.startswith("judge:") and labelled_by.endswith(":score"):
        return (quality - 1) / 9
    return quality


def log_label_command(
    db: Annotated[
        str,
        typer.Option(
            "--db", envvar="CASCADE_ROUTER_DB", help="The decision log: a SQLite file or a SQLAlchemy URL."
        ),
    ],
    by: Annotated[
        str,
        typer.Option(
            help="agreement:METHOD (judge too) or judge[:provider:model] (see cascade-router label)."
        ),
    ],
    pattern: Annotated[str | None, typer.Option(help="The regex of agreement:regex.")] = None,
    judge_config: Annotated[
        Path | None, typer.Option(help="The judge model as a mapping (YAML/JSON).")
    ] = None,
    mode: Annotated[str, typer.Option(help="Judge mode: score (1-10) or pairwise.")] = "score",
    relabel: Annotated[bool, typer.Option(help="Label answers that already have feedback too.")] = False,
    cache: Annotated[Path, typer.Option(help="The judge's call cache.")] = Path("judge-calls.cache.jsonl"),
    concurrency: Annotated[int, typer.Option(help="Judge calls in flight.")] = 4,
) -> None:
    """Label logged answers (requests logged with store_content=True) and store the labels as
    per-rung feedback, for learn / calibrate --log and log export --format dataset.

    Agreement compares each answer with the last answer of the same request (requests that
    escalated hold several); a judge grades each answer (score) or compares it with that last
    answer (pairwise). A judge's 1-10 score is stored as (score - 1) / 9."""
    from cascade_router.cli.app import _open  # the log checked: a bad --db is one line

    if by.partition(":")[0] == "reference":
        raise typer.BadParameter("logged requests have no reference: use agreement:METHOD or judge")
    if mode not in ("score", "pairwise"):
        raise typer.BadParameter(f"--mode {mode!r}: expected score or pairwise")
    log = _open(db)
    judge, call_cache, kind = _judge(by, judge_config, cache, concurrency)
    labeller = labelling.Labeller(
        kind,
        pattern=pattern,
        judge=judge,
        judge_mode="pairwise" if mode == "pairwise" else "score",
        relabel=False,  # answers with feedback are marked below unless --relabel
        concurrency=concurrency,
    )
    work: list[tuple[dict[str, Any], list[str]]] = []
    for record in log.iter_records():
        content = record.get("content") or {}
        texts = content.get("answers") or []
        attempts = record.get("attempts") or []
        labelled = {f.get("rung") for f in record.get("feedback") or [] if f.get("rung") is not None}
        answers: dict[str, Any] = {}
        for i, attempt in enumerate(attempts):
            text = texts[i] if i < len(texts) else None
            if text is None:
                continue
            answers[attempt["name"]] = {"text": text, "rung": i}
            if i in labelled and not relabel:
                answers[attempt["name"]]["quality"] = "kept"
        if answers:
            item = {"id": record["request_id"], "request": content.get("request") or "", "answers": answers}
            work.append((item, list(answers)))
    if not work:
        raise typer.BadParameter(
            "no logged request has stored content: log with DecisionLog(..., store_content=True)"
        )

    async def run() -> list[labelling.LabelStats]:
        try:
            return list(await asyncio.gather(*(labeller.label([item], names) for item, names in work)))
        finally:
            if judge is not None:
                await judge.aclose()

    try:
        results = asyncio.run(run())
    finally:
        if call_cache is not None:
            call_cache.close()
    written = 0
    for item, _ in work:
        for answer in item["answers"].values():
            quality, name = answer.get("quality"), answer.get("labelled_by")
            if not isinstance(quality, float | int) or name is None:
                continue
            log.record_feedback(item["id"], _as_feedback(float(quality), name), name, rung=answer["rung"])
            written += 1
    log.close()
    unreadable = sum(r.unreadable for r in results)
    failed = sum(r.failed for r in results)
    Console().print(
        f"labelled {written} logged answers by {labeller.name} (stored as per-rung feedback) in "
        f"{len(work)} requests; {unreadable} unreadable judge replies and {failed} failed judge calls "
        "left unlabelled",
        markup=False,
        soft_wrap=True,
    )


def register_log(log_app: typer.Typer) -> None:
    log_app.command("label")(log_label_command)
