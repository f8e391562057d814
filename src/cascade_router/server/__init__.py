"""``cascade-router serve``: any configured ladder as an OpenAI-compatible endpoint.

Needs the ``server`` extra (``pip install "cascade-router[server]"``): Starlette, uvicorn,
prometheus-client and orjson. The config and the API key store need only the core, so that
``cascade-router keys`` works on a machine that does not serve. See ``docs/server.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cascade_router.server.config import ServerConfig, load_server_config
from cascade_router.server.keys import ApiKey, KeyStore

if TYPE_CHECKING:
    from cascade_router.server.app import ServerState, build_state, create_app

_APP = ("ServerState", "build_state", "create_app")


def __getattr__(name: str) -> Any:
    # The app (and the server extra it needs) is imported only when it is asked for.
    if name in _APP:
        from cascade_router.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'cascade_router.server' has no attribute {name!r}")


__all__ = [
    "ApiKey",
    "KeyStore",
    "ServerConfig",
    "ServerState",
    "build_state",
    "create_app",
    "load_server_config",
]
