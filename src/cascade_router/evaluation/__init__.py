"""Offline evaluation: datasets of recorded answers (``datasets``), the replay backend
(``replay``), evaluation and its metrics (``metrics``), calibration (``calibration``), plots and
the demo. It runs the runtime's engine over recorded answers; the runtime never imports it.

``cascade_router.evaluation.X`` keeps working for what ``metrics`` defines (the path held it
before the package was laid out by role).
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = frozenset({"calibration", "datasets", "demo", "metrics", "plots", "replay"})


def __getattr__(name: str) -> Any:
    # Lazily, so that importing a submodule (datasets, replay) does not import the metrics and
    # everything they need. Submodules are left to the import system.
    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(name)
    metrics = importlib.import_module("cascade_router.evaluation.metrics")
    try:
        return getattr(metrics, name)
    except AttributeError:
        raise AttributeError(f"module 'cascade_router.evaluation' has no attribute {name!r}") from None
