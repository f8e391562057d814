"""``cascade-router record``: every rung's answer to your prompts, for tuning on your traffic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cascade_router.cascade import Cascade
from cascade_router.evaluation import recording


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def record_command(
    config: Annotated[Path, typer.Option("--config", help="The ladder to record (YAML, TOML or JSON).")],
    prompts: Annotated[
        Path,
        typer.Option(help="JSONL (request, optional reference and id) or CSV with a prompt column."),
    ],
    out: Annotated[Path, typer.Option(help="The dataset to write (JSONL); re-running resumes it.")] = Path(
        "answers.jsonl"
    ),
    cache: Annotated[
        Path | None,
        typer.Option(help="The call cache (JSONL); default: OUT with .cache.jsonl added."),
    ] = None,
    max_cost: Annotated[
        float, typer.Option(help="Refuse to start, and stop, beyond this many dollars.")
    ] = 5.0,
    yes: Annotated[
        bool, typer.Option("--yes", help="Go on although the estimate exceeds --max-cost or is unknown.")
    ] = False,
    concurrency: Annotated[int, typer.Option(help="Calls in flight per provider.")] = 4,
    output_tokens: Annotated[
        int, typer.Option(help="Answer length assumed by the estimate when a rung sets no max_tokens.")
    ] = 256,
    prompt_column: Annotated[str, typer.Option(help="The CSV column holding the prompts.")] = "prompt",
) -> None:
    """Call every rung (and every judge its scorers use) on every prompt; write the dataset.

    Prints the estimated cost first and refuses to go beyond --max-cost unless --yes. Answers are
    cached as they arrive: an interrupted run resumes where it stopped, and a ladder with one more
    rung only calls that rung. Label the result with cascade-router label."""
    if concurrency < 1:
        raise typer.BadParameter("--concurrency must be at least 1")
    items = recording.read_prompts(prompts, column=prompt_column)
    cascade = Cascade.from_config(config, tracing=False, decision_log=None)
    call_cache = recording.CallCache(cache or out.with_name(out.name + ".cache.jsonl"))
    console, err = Console(), Console(stderr=True)
    rows = recording.estimate(cascade, items, call_cache, output_tokens=output_tokens)
    table = Table(title=f"Estimate for {len(items)} prompts (calls already cached are free)")
    for column in ("rung", "model", "calls", "input tokens", "output tokens", "cost"):
        table.add_column(column, justify="left" if column in ("rung", "model") else "right")
    for row in rows:
        table.add_row(
            row.rung,
            row.model,
            str(row.calls),
            str(row.input_tokens),
            str(row.output_tokens),
            _usd(row.cost_usd),
        )
    console.print(table)
    known = [r.cost_usd for r in rows if r.cost_usd is not None]
    total = sum(known) if len(known) == len(rows) else None
    console.print(
        f"estimated total: {_usd(total)} (prompt tokens from their length, answers at max_tokens or "
        f"{output_tokens} tokens)",
        markup=False,
        soft_wrap=True,
    )
    if total is None and not yes:
        err.print(
            "refused: a model's price is unknown, so the cost cannot be estimated; set the rung's "
            "price (price: 0 for a local model) or pass --yes",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if total is not None and total > max_cost and not yes:
        err.print(
            f"refused: the estimate exceeds --max-cost {_usd(max_cost)}; raise it or pass --yes", markup=False
        )
        raise typer.Exit(1)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("recording", total=len(items))

            async def run() -> recording.RecordStats:
                try:
                    return await recording.record(
                        cascade,
                        items,
                        out,
                        call_cache,
                        limits=recording.Limits(concurrency=concurrency),
                        max_cost_usd=None if yes else max_cost,
                        progress=lambda n: progress.advance(task, n),
                    )
                finally:
                    await cascade.aclose()  # the providers' async clients, in their own loop

            stats = asyncio.run(run())
    finally:
        call_cache.close()
    console.print(
        f"wrote {out}: {stats.items} items with every rung's answer, {stats.incomplete} incomplete; "
        f"{stats.called} model calls, {stats.cached} answered from the cache, "
        f"{stats.rate_limited} rate-limit retries; spent {_usd(stats.spent_usd)}"
        + (f" (+ {stats.unpriced_calls} calls of unknown price)" if stats.unpriced_calls else ""),
        markup=False,
        soft_wrap=True,
    )
    if stats.failures:
        err.print(
            f"{len(stats.failures)} calls failed (re-run to retry them), e.g.:", markup=False, soft_wrap=True
        )
        for line in stats.failures[:5]:
            err.print(f"  {line}", markup=False, soft_wrap=True)
    skipped = len(items) - stats.items - stats.incomplete
    if skipped:
        err.print(
            f"stopped at --max-cost {_usd(max_cost)}: {skipped} prompts not recorded",
            markup=False,
            soft_wrap=True,
        )
    if stats.failures or skipped:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("record")(record_command)
