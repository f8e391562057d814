"""Bounding a blocking call in time.

A blocking call cannot be interrupted from Python, so a timed-out sync call is abandoned to its
own thread and finishes (or not) on its own; the caller moves on. Each call gets a thread of its
own the moment it starts: a shared pool would count time spent queued behind other callers
against the timeout (false timeouts under load, and one slow provider starving every other
ladder). Threads whose call has ended are parked for a while and handed the next call (``_start``),
which saves starting one (about 50 µs, most of what a time limit costs a fast call); when none is
parked a new one starts, so no call ever waits for another. The threads are daemons, so an
abandoned call never keeps the process from exiting. Give provider clients their own timeout too,
so that abandoned calls end. Async calls are cancelled properly instead (``asyncio.wait_for``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

T = TypeVar("T")

_PARKED_MAX = 32
"""Idle threads kept for the next calls; more than this many end when their call ends."""
_PARKED_FOR = 30.0
"""Seconds an idle thread waits for a call before it ends."""


class _Parked:
    """An idle thread waiting for its next job."""

    __slots__ = ("jobs",)

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[Callable[[], None], str]] = queue.SimpleQueue()


class _Pool:
    """The parked threads (a stack: the most recently parked is the warmest)."""

    def __init__(self) -> None:
        self.idle: list[_Parked] = []
        self.lock = threading.Lock()

    def after_fork(self) -> None:
        # A forked child has only the forking thread: the parked ones exist in the parent alone.
        self.idle = []
        self.lock = threading.Lock()


_pool = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.after_fork)


def _start(job: Callable[[], None], name: str) -> None:
    """Run ``job`` on a thread of its own now: a parked one if any, else a new one. The thread
    is named ``cascade-<name>`` while it runs it."""
    with _pool.lock:
        worker = _pool.idle.pop() if _pool.idle else None
    if worker is not None:
        worker.jobs.put((job, name))
        return
    threading.Thread(target=_work, args=(job, name), name=f"cascade-{name}", daemon=True).start()


def _work(job: Callable[[], None], name: str) -> None:
    me = _Parked()
    this = threading.current_thread()
    while True:
        this.name = f"cascade-{name}"
        with contextlib.suppress(BaseException):  # a job hands its own outcome over
            job()
        this.name = "cascade-parked"
        with _pool.lock:
            if len(_pool.idle) >= _PARKED_MAX:
                return
            _pool.idle.append(me)
        try:
            job, name = me.jobs.get(timeout=_PARKED_FOR)
        except queue.Empty:
            with _pool.lock:
                if me in _pool.idle:  # nobody took this thread meanwhile: it ends
                    _pool.idle.remove(me)
                    return
            job, name = me.jobs.get()  # taken just now: its job is on the way


class _Outcome:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        # A lock held until the call ends: a one-shot latch, cheaper than an Event (which
        # builds a Condition), and this is paid on every time-limited call.
        self.done = threading.Lock()
        self.done.acquire()
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
            outcome.done.release()

    _start(run, f"timeout {name}")
    if not outcome.done.acquire(timeout=max(0.0, min(timeout, threading.TIMEOUT_MAX))):
        raise on_timeout()
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[no-any-return]


async def in_own_thread(fn: Callable[[], T], *, name: str = "call") -> T:
    """``fn()`` run on a thread of its own, awaited without blocking the event loop.

    For blocking user code inside an async request (a sync scorer function): on the loop's
    thread it would stall every other request and no ``asyncio`` timeout could fire while it
    runs. A thread of its own (not the loop's default executor) for the reasons given above;
    when the awaiting task is cancelled or times out, the call is abandoned to its thread.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled or timed out: nobody waits for this result
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = ctx.run(fn)
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed while the call ran
            loop.call_soon_threadsafe(settle, value, error)

    _start(run, f"thread {name}")
    return await future


_DONE: Any = object()


class ChunkPump:
    """Reads a blocking iterator on a thread of its own, so that each item can be awaited with a
    time limit (a stream whose server went silent). ``next`` returns ``end`` after the last
    item; ``close`` makes the thread stop at its next item and close the iterator."""

    __slots__ = ("_notify", "_queue", "_stashed", "_stop")

    def __init__(
        self, items: Iterator[Any], *, name: str = "stream", notify: threading.Event | None = None
    ) -> None:
        self._queue: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._notify = notify
        self._stashed: tuple[bool, Any] | None = None
        ctx = contextvars.copy_context()
        _start(lambda: ctx.run(self._run, items), f"stream {name}")

    def _put(self, entry: tuple[bool, Any]) -> None:
        self._queue.put(entry)
        if self._notify is not None:
            self._notify.set()

    def _run(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if self._stop.is_set():
                    break
                self._put((True, item))
            else:
                self._put((True, _DONE))
        except BaseException as exc:  # handed to the reader, whatever it is
            self._put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if self._stop.is_set() and callable(close):
                with contextlib.suppress(Exception):
                    close()

    def peek(self) -> Literal[False] | BaseException | None:
        """Without waiting: False when nothing has arrived yet, the error when the iterator
        failed, else None (an item, or the end, is ready for ``next``)."""
        if self._stashed is None:
            try:
                self._stashed = self._queue.get_nowait()
            except queue.Empty:
                return False
        ok, item = self._stashed
        return None if ok else item

    def next(self, timeout: float | None, on_timeout: Callable[[], BaseException], end: Any = None) -> Any:
        if self._stashed is not None:
            (ok, item), self._stashed = self._stashed, None
        else:
            try:
                ok, item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self.close()
                raise on_timeout() from None
        if not ok:
            raise item
        return end if item is _DONE else item

    def close(self) -> None:
        self._stop.set()
