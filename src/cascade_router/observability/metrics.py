"""The library's OpenTelemetry counters: no-ops until the application sets a meter provider, and
never an error a request or a log writer could see."""

from __future__ import annotations

import contextlib
import functools
from typing import Any


@functools.cache
def counter(name: str, unit: str, description: str) -> Any:
    """The ``cascade_router`` meter's counter ``name``, made once; None if metrics are broken."""
    try:
        from opentelemetry import metrics

        return metrics.get_meter("cascade_router").create_counter(name, unit=unit, description=description)
    except Exception:  # metrics must never break a request
        return None


def add(instrument: Any, value: int, attributes: dict[str, Any] | None = None) -> None:
    """``instrument.add``, swallowing any failure of the metrics SDK."""
    if instrument is None:
        return
    with contextlib.suppress(Exception):  # metrics must never break a request
        instrument.add(value, attributes)
