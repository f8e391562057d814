"""Bounding a blocking call in time.

A blocking call cannot be interrupted from Python, so a timed-out sync call is abandoned to its
own thread and finishes (or not) on its own; the caller moves on. Each call gets a thread of its
own, started when the call starts: a shared pool would count time spent queued behind other
callers against the timeout (false timeouts under load, and one slow provider starving every
other ladder). The threads are daemons, so an abandoned call never keeps the process from
exiting. Give provider clients their own timeout too, so that abandoned calls end. Async calls
are cancelled properly instead (``asyncio.wait_for``).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Outcome:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def call_with_timeout(
    fn: Callable[[], T], timeout: float | None, on_timeout: Callable[[], BaseException], *, name: str = "call"
) -> T:
    """``fn()``, or the exception ``on_timeout()`` builds once ``timeout`` seconds have passed
    (None: no limit, and ``fn`` runs in the calling thread)."""
    if timeout is None:
        return fn()
    # The thread runs in a copy of our context, so tracing and callbacks see the same parents.
    ctx = contextvars.copy_context()
    outcome = _Outcome()

    def run() -> None:
        try:
            outcome.value = ctx.run(fn)
        except BaseException as exc:  # handed to the caller, whatever it is
            outcome.error = exc
        finally:
            outcome.done.set()

    threading.Thread(target=run, name=f"cascade-timeout {name}", daemon=True).start()
    if not outcome.done.wait(timeout):
        raise on_timeout()
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[no-any-return]
