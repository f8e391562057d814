"""``cascade-router serve``: any configured ladder as an OpenAI-compatible endpoint.

Needs the ``server`` extra (``pip install "cascade-router[server]"``): Starlette, uvicorn and
prometheus-client. See ``docs/server.md``.
"""

from cascade_router.server.app import ServerState, build_state, create_app
from cascade_router.server.config import ServerConfig, load_server_config
from cascade_router.server.keys import ApiKey, KeyStore

__all__ = [
    "ApiKey",
    "KeyStore",
    "ServerConfig",
    "ServerState",
    "build_state",
    "create_app",
    "load_server_config",
]
