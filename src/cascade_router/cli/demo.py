"""``cascade-router demo``: a cascade at work, offline by default (see ``cascade_router.evaluation.demo``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cascade_router.cascade import Cascade
from cascade_router.config import load_config
from cascade_router.errors import ConfigError
from cascade_router.evaluation import demo
from cascade_router.evaluation.datasets import Dataset, DatasetItem

LOCAL_URL = "http://127.0.0.1:8177/v1"
KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _mark(quality: float | None) -> str:
    if quality is None:
        return "[dim]?[/]"
    return "[green]✓[/]" if quality >= 0.5 else "[red]✗[/]"


def _show(console: Console, rows: Iterable[demo.Row], total: int) -> list[demo.Row]:
    """Print one line per request as it completes, under a live progress bar."""
    done: list[demo.Row] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("requests", total=total)
        for row in rows:
            done.append(row)
            answered = row.result.answered_by
            colour = "cyan" if answered.rung == 0 else "magenta"
            cost = row.result.cost_usd
            progress.console.print(
                f"{len(done):>4} {row.item_id:<18} [{colour}]{answered.name:<12}[/] {_mark(row.quality)} "
                f"{_money(cost) if cost is not None else f'{row.result.usage.total_tokens} tok':>9}  "
                f"[dim]{demo.why(row.result)}[/]",
                highlight=False,
            )
            progress.advance(task)
    return done


def _summary(console: Console, rows: list[demo.Row], strongest: str, cascade_name: str) -> None:
    s = demo.summarize(rows)
    table = Table(title=f"{s.requests} requests", title_justify="left")
    for column in ("", "quality", "cost", "tokens"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(
        f"always {strongest}",
        _pct(s.strong_quality),
        _money(s.strong_cost),
        str(s.strong_tokens) if s.strong_tokens is not None else "unknown",
    )
    table.add_row(f"cascade {cascade_name}", _pct(s.quality), _money(s.cost), str(s.tokens))
    console.print(table)
    console.print("answered by: " + ", ".join(f"{k} {v}" for k, v in s.answered.items()))
    parts = []
    if s.quality is not None and s.strong_quality:
        parts.append(f"quality {s.quality / s.strong_quality:.1%} of always-{strongest}")
    if s.saving is not None:
        parts.append(f"cost saved {s.saving:.1%}")
    elif s.strong_tokens:
        parts.append(f"tokens {s.tokens / s.strong_tokens:.0%} of always-{strongest} (prices unknown)")
    escalated = sum(1 for r in rows if r.result.answered_by.rung > 0)
    parts.append(f"escalated {escalated / max(len(rows), 1):.1%}")
    console.print("[bold]" + ";  ".join(parts) + "[/]")


def _offline(console: Console, requests: int, seed: int, log: str | None) -> None:
    with console.status("fitting a learned scorer on half of GSM8K and calibrating its threshold…"):
        prepared = demo.prepare(seed=seed, decision_log=log)
    n = len(prepared.run_ids) if requests <= 0 else min(requests, len(prepared.run_ids))
    console.print(
        "[bold]GSM8K, recorded answers of Mixtral-8x7B (cheap) and GPT-4 (strong)[/] "
        "(RouteLLM's data, Apache-2.0)\n"
        f"scorer fitted on {len(prepared.fit_ids)} answers; threshold {prepared.threshold:.2f} calibrated "
        f"there for {prepared.target:.0%} of GPT-4's quality; now {n} other questions:\n"
    )
    rows = _show(console, demo.replayed_rows(prepared, n), n)
    console.print()
    _summary(console, rows, "gpt-4", "mixtral → gpt-4")
    if log and prepared.cascade.decision_log is not None:
        prepared.cascade.decision_log.close()
        console.print(f"decision log: {log}  (cascade-router log stats --db {log})")


def _live(console: Console, cascade: Cascade, requests: int, seed: int, title: str) -> None:
    items = _questions(requests, seed)
    console.print(f"[bold]{title}[/]\n{len(items)} GSM8K questions, graded against the reference answers:\n")
    system = "Solve the problem. End with the final answer as a number."
    try:
        rows = _show(console, demo.live_rows(cascade, items, system=system), len(items))
    finally:
        cascade.close()
    console.print()
    _summary(console, rows, cascade.engine.rungs[-1].name, cascade.name)


def _questions(requests: int, seed: int) -> list[DatasetItem]:
    ds = Dataset.load(demo.DATASET)
    _, run_ids = demo.split(ds, seed)
    return [ds.get(i) for i in run_ids[: max(requests, 1)]]


def _check_keys(config: Path) -> None:
    for i, rung in enumerate(load_config(config).rungs):
        model = rung.model
        provider = model.partition(":")[0] if isinstance(model, str) else (model or {}).get("provider")
        key = KEYS.get(str(provider))
        # A local server (base_url) or a key written in the config needs no environment key.
        given = isinstance(model, dict) and (model.get("base_url") or model.get("api_key"))
        if key and not given and not os.environ.get(key):
            raise ConfigError(f"rungs[{i}].model", f"{provider} needs {key} set in the environment")


def _server_problem(url: str, timeout: float = 3.0) -> str | None:
    """Why the OpenAI-compatible server at ``url`` is not usable (None: it lists its models)."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/models", timeout=timeout) as response:
            json.load(response)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} on /models"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    except ValueError:
        return "its /models is not JSON"
    return None


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        local: Annotated[
            bool, typer.Option("--local", help="Run live against the local Gemma 3 270M server.")
        ] = False,
        url: Annotated[
            str, typer.Option("--url", help="The local server's base URL (with --local).")
        ] = LOCAL_URL,
        config: Annotated[
            Path | None,
            typer.Option("--config", help="Run this ladder live (native backends; API keys from env)."),
        ] = None,
        requests: Annotated[
            int, typer.Option("--requests", "-n", help="How many questions (0: the whole held-out half).")
        ] = 0,
        seed: Annotated[int, typer.Option(help="Which half of GSM8K to fit on and which to run.")] = 0,
        log: Annotated[
            str | None, typer.Option("--log", help="Also write a decision log here (SQLite path or URL).")
        ] = None,
    ) -> None:
        """Watch a cascade decide, request by request, then compare it with always-strong.

        With no option: recorded GSM8K answers, no key, no network. --local: live on the local
        server (python scripts/local_llm.py serve). --config: your ladder, live.
        """
        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = 100  # piped into a file or a pager: keep each request on one line
        if local and config is not None:
            raise typer.BadParameter("give --local or --config, not both")
        if local:
            problem = _server_problem(url)
            if problem is not None:
                typer.echo(
                    f"no LLM server answers at {url} ({problem}); start one with "
                    "`python scripts/local_llm.py serve` (see docs/local-llm.md), or pass --url",
                    err=True,
                )
                raise typer.Exit(1)
            cascade = Cascade.from_config(demo.local_ladder(url), decision_log=log)
            _live(console, cascade, requests or 5, seed, f"live: Gemma 3 270M at {url}, short → long budget")
        elif config is not None:
            _check_keys(config)
            cascade = Cascade.from_config(config, decision_log=log)
            _live(console, cascade, requests or 10, seed, f"live: {config}")
        else:
            _offline(console, requests, seed, log)
