"""Run every script in examples/ (CI does): each must exit 0. A script whose docstring has a
``# requires: VAR ...`` line is skipped, with that reason printed, when those variables are unset.

    python scripts/run_examples.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRES = re.compile(r"#\s*requires:\s*(.+)")


def main() -> None:
    failed = []
    scripts = sorted(p for p in (ROOT / "examples").rglob("*.py") if not p.name.startswith("_"))
    for script in scripts:
        name = script.relative_to(ROOT)
        match = REQUIRES.search(script.read_text(encoding="utf-8"))
        missing = [v for v in match.group(1).split() if not os.environ.get(v)] if match else []
        if missing:
            print(f"skipped {name}: needs {', '.join(missing)} (provider keys are not available here)")
            continue
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
        print(f"{'ok' if done.returncode == 0 else 'FAILED'} {name}")
        if done.returncode != 0:
            failed.append(name)
            print(done.stdout[-2000:], done.stderr[-4000:], sep="\n")
    if failed:
        sys.exit(f"{len(failed)} example(s) failed: {', '.join(map(str, failed))}")


if __name__ == "__main__":
    main()
