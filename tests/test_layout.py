"""The package's layout by role: the runtime never imports offline evaluation or the CLI, and
the modules that moved are still importable by their old paths (with a deprecation)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from cascade_router._moved import MOVED


def test_the_runtime_imports_neither_evaluation_nor_the_cli() -> None:
    code = (
        "import sys\n"
        "import cascade_router, cascade_router.cascade, cascade_router.ladder, cascade_router.engine\n"
        "import cascade_router.backends.openai, cascade_router.scorers, cascade_router.testing\n"
        "import cascade_router.observability.telemetry, cascade_router.observability.decision_log\n"
        "wings = ('cascade_router.evaluation', 'cascade_router.cli')\n"
        "bad = sorted(m for m in sys.modules if m.startswith(wings))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_a_moved_module_keeps_its_old_path(old: str, new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
