"""The ``cascade-router`` command line: ``app`` (the ``log`` commands), ``evaluate`` (eval,
calibrate, compare, learn) and ``demo``.

``main`` is kept here, apart from the commands, so that a missing ``cli`` extra gives one clear
line instead of a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from cascade_router.cli.app import app
    except ImportError as exc:
        sys.exit(f"the cascade-router command needs the cli extra: pip install 'cascade-router[cli]' ({exc})")
    from cascade_router.errors import ConfigError

    try:
        app()
    except ConfigError as exc:
        # A mistake in the user's input: one line that says what to change, not a traceback.
        sys.exit(f"error: {exc}")
