"""The generated configuration reference matches the code it is generated from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_reference_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    # Every field of a rung is documented, with its docstring.
    from cascade_router.config import Rung

    for name, field in Rung.model_fields.items():
        assert f"| `{name}` |" in page
        assert field.description, f"Rung.{name} has no docstring"
