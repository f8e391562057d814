"""Reading and writing the JSONL files of the evaluation loop (prompts, datasets)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cascade_router.errors import ConfigError


def read_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file (gzipped when it ends in
    ``.gz``); a line that is not a JSON object is a ``ConfigError`` naming the file and line."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p}:{line_no}", f"not valid JSON: {exc.msg}") from None
            if not isinstance(value, dict):
                raise ConfigError(f"{p}:{line_no}", f"expected an object, got {type(value).__name__}")
            yield line_no, value


def write_objects(path: Path, objects: Iterable[dict[str, Any]]) -> None:
    """Write JSONL to a temporary file, then rename it over ``path``: a reader (or a crash)
    never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for obj in objects:
            f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
