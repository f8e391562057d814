"""Modules that moved when the package was laid out by role, still importable by their old path.

``import cascade_router.decision_log`` gives the very module ``cascade_router.observability.
decision_log`` (same object, private names included), with a ``DeprecationWarning`` naming the
new path. A finder on ``sys.meta_path`` does it, so no stub file is left at the old place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "cascade_router.datasets": "cascade_router.evaluation.datasets",
    "cascade_router.replay": "cascade_router.evaluation.replay",
    "cascade_router.calibration": "cascade_router.evaluation.calibration",
    "cascade_router.plots": "cascade_router.evaluation.plots",
    "cascade_router.demo": "cascade_router.evaluation.demo",
    "cascade_router.telemetry": "cascade_router.observability.telemetry",
    "cascade_router.otel": "cascade_router.observability.otel",
    "cascade_router.semconv": "cascade_router.observability.semconv",
    "cascade_router.decision_log": "cascade_router.observability.decision_log",
    "cascade_router.log_stats": "cascade_router.observability.log_stats",
    "cascade_router.redaction": "cascade_router.observability.redaction",
    "cascade_router.learned": "cascade_router.scorers.learned",
}
"""Old path -> new path."""


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module: ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} moved to {self.new}; import it from there",
            DeprecationWarning,
            stacklevel=4,
        )
        # The import system returns whatever sys.modules holds for the name after exec_module.
        sys.modules[module.__name__] = importlib.import_module(self.new)


class MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
