"""Bounding a blocking call in time.

A blocking call cannot be interrupted from Python, so a timed-out sync call is abandoned to a
worker thread and finishes (or not) on its own; the caller moves on. Give provider clients
their own timeout too, so abandoned calls end. Async calls are cancelled properly.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from cascade_router.errors import RungTimeoutError

T = TypeVar("T")


@functools.cache
def _executor() -> ThreadPoolExecutor:
    # Created on first use: most processes never set a timeout on a sync rung.
    return ThreadPoolExecutor(max_workers=32, thread_name_prefix="cascade-timeout")


def call_with_timeout(fn: Callable[[], T], timeout: float | None, rung: str) -> T:
    """``fn()``, or ``RungTimeoutError`` after ``timeout`` seconds (None: no limit)."""
    if timeout is None:
        return fn()
    # The worker runs in a copy of our context, so tracing and callbacks see the same parents.
    ctx = contextvars.copy_context()
    future = _executor().submit(ctx.run, fn)
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        future.cancel()
        raise RungTimeoutError(rung, timeout) from None
