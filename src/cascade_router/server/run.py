"""Running the server under uvicorn: address checks, workers, graceful shutdown."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from cascade_router.errors import ConfigError
from cascade_router.server.config import ServerConfig, load_server_config

CONFIG_ENV = "CASCADE_ROUTER_SERVER_CONFIG"
"""Where a uvicorn worker process finds the config (``--workers`` starts fresh processes)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def check_exposure(config: ServerConfig, host: str, *, insecure_no_auth: bool) -> str:
    """What to say at start-up about who can call the server; raises when an address other
    machines can reach would be served without keys and without ``--insecure-no-auth``."""
    if config.keys is not None:
        return f"API keys required (store: {config.keys.split('://', 1)[0]})"
    if is_loopback(host):
        return "no API keys configured: any request is accepted, on this machine's loopback address only"
    if not insecure_no_auth:
        raise ConfigError(
            "--host",
            f"{host} is reachable from other machines and no API keys are configured ('keys:' in the "
            "config, made with 'cascade-router keys create'); bind 127.0.0.1, configure keys, or pass "
            "--insecure-no-auth to serve anyone who can reach it",
        )
    return (
        f"WARNING: no API keys and --insecure-no-auth: anyone who can reach {host} can spend on these ladders"
    )


def app_from_env() -> Any:
    """The ASGI app of a worker process, from the config named in ``CASCADE_ROUTER_SERVER_CONFIG``."""
    from cascade_router.server.app import create_app

    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(CONFIG_ENV, "not set: start the server with 'cascade-router serve --config FILE'")
    app = create_app(path)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        # Each worker process exports its own spans (a provider does not survive a fork).
        from cascade_router.observability.otel import configure_tracing

        provider = configure_tracing(os.environ.get("OTEL_SERVICE_NAME", "cascade-router"))
        app.state.cascade.on_shutdown.append(getattr(provider, "shutdown", lambda: None))
    return app


def serve(
    config_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    insecure_no_auth: bool = False,
    log_level: str = "info",
    announce: bool = True,
) -> None:
    """Serve the config's ladders until SIGINT / SIGTERM; then requests in flight finish (within
    ``shutdown_grace_s``) and the decision log is flushed."""
    import uvicorn

    config = load_server_config(config_path)
    exposure = check_exposure(config, host, insecure_no_auth=insecure_no_auth)
    if workers > 1 and config.state is None and config.keys is not None:
        # Rate limits and budgets counted per worker would each allow the whole limit.
        raise ConfigError(
            "--workers",
            "several workers with API keys need a shared 'state: redis://...' for limits and budgets",
        )
    os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cascade-metrics-")
    if announce:
        print(
            f"cascade-router serving {', '.join(sorted(config.ladders))} on http://{host}:{port}/v1 "
            f"({workers} worker{'s' if workers > 1 else ''}); {exposure}",
            flush=True,
        )
    uvicorn.run(
        "cascade_router.server.run:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=int(config.shutdown_grace_s) + 1,
        # Access logs are the server's own metrics and traces; a line per request costs time.
        access_log=False,
    )
