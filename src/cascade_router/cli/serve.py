"""``cascade-router serve`` and ``cascade-router keys create|list|revoke``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cascade_router.errors import ConfigError


def _server_missing() -> str | None:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"the server needs the server extra: pip install 'cascade-router[server]' ({exc})"
    return None


def serve_command(
    config: Annotated[Path, typer.Option("--config", help="A server config or one ladder.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
    insecure_no_auth: Annotated[
        bool,
        typer.Option("--insecure-no-auth", help="Serve a non-loopback address without API keys."),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the config's ladders as an OpenAI-compatible API (/v1/chat/completions, /v1/models,
    /healthz, /readyz, /metrics). The request's "model" names the ladder."""
    problem = _server_missing()
    if problem:
        raise typer.BadParameter(problem)
    from cascade_router.server.run import serve

    serve(
        config, host=host, port=port, workers=workers, insecure_no_auth=insecure_no_auth, log_level=log_level
    )


keys_app = typer.Typer(help="Manage the server's API keys.", no_args_is_help=True, rich_markup_mode=None)

KeysOption = Annotated[
    str | None,
    typer.Option(
        "--store", envvar="CASCADE_ROUTER_KEYS", help="The key store: a SQLAlchemy URL or SQLite file."
    ),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="A server config: its 'keys:' is the store.")
]


def _store(store: str | None, config: Path | None) -> object:
    from cascade_router.server.config import load_server_config
    from cascade_router.server.keys import KeyStore

    if store is None and config is not None:
        store = load_server_config(config).keys
        if store is None:
            raise ConfigError(str(config), "keys: this config names no key store")
    if store is None:
        raise ConfigError("--store", "give the key store (--store URL) or a server config (--config FILE)")
    return KeyStore(store)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Whose key it is (shown in lists and logs).")],
    ladder: Annotated[
        list[str] | None, typer.Option("--ladder", help="A ladder it may use (repeat); default: all.")
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests a minute.")] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="US dollars per period.")] = None,
    budget_per: Annotated[str, typer.Option("--budget-per", help="hour, day or month (UTC).")] = "day",
    store: KeysOption = None,
    config: ConfigOption = None,
) -> None:
    """Make a key. It is printed once and kept only as a hash: store it now."""
    from cascade_router.server.keys import KeyStore

    keys = _store(store, config)
    assert isinstance(keys, KeyStore)
    if config is not None and ladder:
        from cascade_router.server.config import load_server_config

        known = load_server_config(config).ladders
        unknown = [name for name in ladder if name != "*" and name not in known]
        if unknown:
            raise ConfigError(
                "--ladder", f"{', '.join(unknown)}: not a ladder of {config} ({', '.join(known)})"
            )
    key, record = keys.create(
        name,
        ladders=tuple(ladder or ("*",)),
        rpm=rpm,
        budget_usd=budget_usd,
        budget_per=budget_per,  # type: ignore[arg-type]  # checked by create
    )
    out = Console(markup=False, highlight=False)
    out.print(key)
    Console(stderr=True, markup=False, highlight=False).print(
        f"key {record.id} ({record.name}) for {', '.join(record.ladders)}: shown once, kept only as a hash"
    )


@keys_app.command("list")
def keys_list(
    store: KeysOption = None,
    config: ConfigOption = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """The keys (never the keys themselves: their id, name, first characters and limits)."""
    from cascade_router.server.keys import KeyStore

    keys = _store(store, config)
    assert isinstance(keys, KeyStore)
    records = keys.list(include_revoked=revoked)
    out = Console(markup=False, highlight=False)
    if as_json:
        for record in records:
            out.print(json.dumps(record.to_dict()), soft_wrap=True)
        return
    table = Table("id", "name", "prefix", "ladders", "rpm", "budget", "created", "revoked")
    for r in records:
        table.add_row(
            r.id,
            r.name,
            r.prefix + "…",
            ", ".join(r.ladders),
            str(r.rpm or "-"),
            f"${r.budget_usd:g}/{r.budget_per}" if r.budget_usd is not None else "-",
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            r.revoked_at.strftime("%Y-%m-%d %H:%M") if r.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (or its prefix).")],
    store: KeysOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key: every server process refuses it within its key cache time (5 s by default)."""
    from cascade_router.server.keys import KeyStore

    keys = _store(store, config)
    assert isinstance(keys, KeyStore)
    record = keys.revoke(key_id)
    Console(markup=False, highlight=False).print(f"revoked {record.id} ({record.name})")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.add_typer(keys_app, name="keys")
