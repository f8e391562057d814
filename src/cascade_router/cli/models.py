"""``cascade-router models``: the capability and price catalog, or a ladder's rungs in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cascade_router.catalog import ModelInfo, model_info, models
from cascade_router.config import load_config
from cascade_router.errors import ConfigError


def _mark(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _number(value: float | None, money: bool = False) -> str:
    if value is None:
        return "?"
    return f"${value:g}" if money else f"{int(value):,}"


def _rung_info(rung: Any) -> ModelInfo:
    spec = rung.model
    provider, name = rung.provider, None
    if isinstance(spec, str):
        head, sep, tail = spec.partition(":")
        provider, name = (provider or head, tail) if sep else (provider, spec)
    elif isinstance(spec, dict):
        provider, name = provider or spec.get("provider"), spec.get("model")
    price = rung.price
    max_tokens = spec.get("max_tokens") if isinstance(spec, dict) else None
    return model_info(
        provider,
        str(name or rung.name or "?"),
        input_per_mtok=price.input_per_mtok if price else None,
        output_per_mtok=price.output_per_mtok if price else None,
        context_window=rung.context_window,
        prefill=rung.prefill,
        max_output_tokens=max_tokens,
    )


def models_command(
    search: Annotated[str | None, typer.Argument(help="Only models whose name holds this.")] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="Only this provider's models.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Show this ladder's rungs, with their own settings.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model.")] = False,
) -> None:
    """Prices (per million tokens), context windows, longest answers and what each model can do
    (logprobs whole and streamed, tools, JSON schema, prefill); '?' where it is not known.

    From the genai-prices catalog and this project's capability table (cascade_router.catalog).
    """
    err = Console(stderr=True, markup=False, highlight=False)
    if config is not None:
        try:
            ladder = load_config(config)
        except ConfigError as exc:
            err.print(f"error: {exc}", style="red")
            raise typer.Exit(2) from None
        found = [_rung_info(r) for r in ladder.rungs]
    else:
        found = models(provider, search)
    if not found:
        err.print("no model matches", style="yellow")
        raise typer.Exit(1)
    out = Console(markup=False, highlight=False, soft_wrap=True)
    if as_json:
        for info in found:
            out.print(json.dumps(info.as_dict()))
        return
    table = Table(
        "provider",
        "model",
        "in $/Mtok",
        "out $/Mtok",
        "context",
        "max out",
        "logprobs",
        "streamed",
        "tools",
        "schema",
        "prefill",
    )
    for info in found:
        caps = info.capabilities
        table.add_row(
            info.provider or "?",
            info.model,
            _number(info.input_per_mtok, money=True),
            _number(info.output_per_mtok, money=True),
            _number(info.context_window),
            _number(caps.max_output_tokens),
            _mark(caps.logprobs),
            _mark(caps.streaming_logprobs),
            _mark(caps.tool_calling),
            _mark(caps.structured_output),
            _mark(caps.prefill),
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
