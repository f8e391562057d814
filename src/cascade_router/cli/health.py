"""``cascade-router health``: the circuit breakers of a ladder's rungs, as the store holds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cascade_router.circuit import BreakerState, CircuitBreakers, CircuitBreakerSettings, breaker_key
from cascade_router.config import LadderConfig, load_config
from cascade_router.errors import ConfigError
from cascade_router.observability.redaction import redact, safe_url


def _keys(config: LadderConfig) -> list[str]:
    """Each rung's breaker key, from the config alone (no client is built, no key is read):
    the same key a running ladder uses for a ``provider:model`` string or a model mapping."""
    keys = []
    for i, rung in enumerate(config.rungs):
        model = rung.model
        provider, name, endpoint = rung.provider, None, None
        if isinstance(model, str):
            head, sep, tail = model.partition(":")
            provider, name = (provider or head, tail) if sep else (provider, model)
        elif isinstance(model, dict):
            provider = provider or model.get("provider")
            name = model.get("model")
            base = model.get("base_url")
            endpoint = safe_url(str(base)) if base else None
        keys.append(breaker_key(provider, name, endpoint, rung.name or f"rung{i}"))
    return keys


def health(
    config: Annotated[Path, typer.Argument(help="The ladder's config file (YAML, TOML or JSON).")],
    store: Annotated[
        str | None,
        typer.Option("--store", help="Read breakers from this store instead of the config's (redis://...)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per rung.")] = False,
) -> None:
    """Show each rung's circuit breaker: closed, open (and for how long) or half-open.

    Exits with 1 when any breaker is open, so that it can serve as a health probe.
    """
    err = Console(stderr=True, markup=False, highlight=False)
    try:
        ladder = load_config(config)
    except ConfigError as exc:
        err.print(f"error: {redact(str(exc))}", style="red")
        raise typer.Exit(2) from None
    settings = ladder.circuit_breaker or CircuitBreakerSettings()
    if store is not None:
        settings = settings.model_copy(update={"store": store})
    if ladder.circuit_breaker is None and store is None:
        err.print(
            "note: the config sets no circuit_breaker; showing this process's empty store", style="yellow"
        )
    try:
        breakers = CircuitBreakers(settings, _keys(ladder))
        states = [breakers.state(i) for i in range(len(ladder.rungs))]
    except Exception as exc:
        err.print(f"error: cannot read the breakers' store: {redact(str(exc))}", style="red")
        raise typer.Exit(2) from None
    names = [r.name or f"rung{i}" for i, r in enumerate(ladder.rungs)]
    _show(names, states, as_json)
    if any(s.state == "open" for s in states):
        raise typer.Exit(1)


def _show(names: list[str], states: list[BreakerState], as_json: bool) -> None:
    out = Console(markup=False, highlight=False, soft_wrap=True)
    if as_json:
        for name, s in zip(names, states, strict=True):
            out.print(json.dumps(_as_dict(name, s)))
        return
    table = Table(
        "rung", "breaker", "state", "consecutive failures", "window calls", "window failures", "probe in"
    )
    for name, s in zip(names, states, strict=True):
        table.add_row(
            name,
            s.key,
            s.state,
            str(s.consecutive_failures),
            str(s.window_calls),
            str(s.window_failures),
            "" if s.reopens_in_s is None else f"{s.reopens_in_s:.1f} s",
        )
    out.print(table)


def _as_dict(name: str, s: BreakerState) -> dict[str, object]:
    return {
        "rung": name,
        "key": s.key,
        "state": s.state,
        "consecutive_failures": s.consecutive_failures,
        "window_calls": s.window_calls,
        "window_failures": s.window_failures,
        "reopens_in_s": s.reopens_in_s,
    }


def register(app: typer.Typer) -> None:
    app.command("health")(health)
