"""The decision log: one record per request, written off the request path.

Records go into a bounded in-memory buffer; a background thread writes them in batches through
SQLAlchemy (SQLite by default, PostgreSQL when several processes share a log). The buffer is
flushed on ``close()`` and at interpreter exit, so nothing is lost on a clean shutdown. A batch
the database refuses is retried with backoff (a SQLite file locked for a few seconds, a
PostgreSQL restart) for ``retry_for`` seconds. When the buffer is full or the database stays
unwritable, records are dropped and *counted*: in ``stats()``, in the
``cascade.decision_log.records_lost`` metric, and in a warning at most once per
``report_interval`` with the count since the last one. The log never blocks or fails a request.

After ``fork()`` (gunicorn ``--preload``, Celery prefork, multiprocessing) the child gets a
fresh writer and connection pool of its own on its first record; records the parent had queued
stay the parent's to write.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy import inspect as sql_inspect
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.exc import SQLAlchemyError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from cascade_router.errors import ConfigError
from cascade_router.observability import metrics
from cascade_router.observability.redaction import redact, register_url_secrets, safe_url

SCHEMA_VERSION = 2
"""Bumped on every change of the tables below; ``ensure_schema`` migrates older logs.
1 -> 2: ``cascade_requests.content`` and ``cascade_feedback.rung``."""

_log = logging.getLogger("cascade_router.decision_log")

metadata = MetaData()

requests_table = Table(
    "cascade_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("trace_id", String(32), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("cascade", String(200), nullable=False),
    Column("config_hash", String(32), nullable=False),
    Column("package_version", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("answered_rung", Integer, nullable=True),
    Column("answered_name", String(200), nullable=True),
    Column("answered_model", String(200), nullable=True),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cost_usd", Float, nullable=True),
    Column("latency_s", Float, nullable=False),
    Column("error", Text, nullable=True),
    Column("ladder", JSON, nullable=False),
    Column("attempts", JSON, nullable=False),
    Column("content", JSON, nullable=True),
)

# No foreign key: feedback may arrive while its request's record is still in the buffer.
feedback_table = Table(
    "cascade_feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("score", Float, nullable=False),
    Column("comment", Text, nullable=True),
    Column("rung", Integer, nullable=True),
)

schema_table = Table("cascade_schema", metadata, Column("version", Integer, primary_key=True))


def database_url(target: str | Path) -> str:
    """A SQLAlchemy URL from a URL or a SQLite file path."""
    text = str(target)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _make_engine(url: str) -> SqlEngine:
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "a PostgreSQL decision log needs psycopg: pip install 'cascade-router[postgres]'"
            ) from exc
        # Fail fast when the server is down: the writer must not sit on a dead connection.
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 3})
    return create_engine(url)


class SchemaError(RuntimeError):
    """The database holds a decision log this version of cascade-router cannot use."""


def ensure_schema(engine: SqlEngine) -> None:
    """Create the tables on first use and check the schema version.

    The version is read before anything is created: a log written by a newer cascade-router is
    refused untouched.
    """
    if sql_inspect(engine).has_table(schema_table.name):
        with engine.connect() as conn:
            found = conn.execute(select(func.max(schema_table.c.version))).scalar()
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaError(
                f"this decision log has schema version {found}, newer than this cascade-router "
                f"understands ({SCHEMA_VERSION}); upgrade cascade-router"
            )
    metadata.create_all(engine)
    with engine.begin() as conn:
        version = conn.execute(select(func.max(schema_table.c.version))).scalar()
        if version is None:
            conn.execute(schema_table.insert(), {"version": SCHEMA_VERSION})
        elif version == 1:
            conn.execute(text("ALTER TABLE cascade_requests ADD COLUMN content JSON"))
            conn.execute(text("ALTER TABLE cascade_feedback ADD COLUMN rung INTEGER"))
            conn.execute(schema_table.insert(), {"version": SCHEMA_VERSION})


def _check_target(url: str) -> None:
    """Refuse, at construction, a SQLite path that can never be written: every record would
    otherwise be lost later, one vague warning at a time."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return
    path = Path(url.removeprefix("sqlite:///"))
    if path.is_dir():
        raise ConfigError("decision_log", f"{path} is a directory, not a SQLite file")
    if not path.parent.is_dir():
        raise ConfigError("decision_log", f"the folder {path.parent} does not exist")


def _lost_counter() -> Any:
    """The ``cascade.decision_log.records_lost`` counter."""
    return metrics.counter(
        "cascade.decision_log.records_lost",
        "{record}",
        "Decision-log records dropped (buffer full, log closed) or not written",
    )


class _ForkGuard:
    """Keeps fork() from landing while a writer thread of ours is inside the database driver.

    SQLite (and libpq) hold process-wide mutexes during a call; a child forked while another
    thread held one deadlocks on its first connection. Database calls run inside ``db_call``;
    before a fork, new calls wait and running ones are given up to ``wait`` seconds to end.
    """

    wait = 10.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._forking = False

    @contextlib.contextmanager
    def db_call(self) -> Iterator[None]:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()  # held across the fork, released in the parent right after
        self._forking = True
        deadline = time.monotonic() + self.wait
        while self._active and (remaining := deadline - time.monotonic()) > 0:
            self._cond.wait(remaining)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the parent's threads do not exist here


_guard = _ForkGuard()
_live_logs: weakref.WeakSet[DecisionLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    _guard.after_fork_in_child()
    _registry.lock = threading.Lock()  # may have been held by another thread at the fork
    for log in list(_live_logs):
        log._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_guard.before_fork,
        after_in_parent=_guard.after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


@dataclass(frozen=True, slots=True)
class Deferred:
    """A record built on the writer thread, off the request path: ``build()`` makes the row."""

    request_id: str
    build: Callable[[], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class LogStats:
    written: int
    """Records written to the database."""
    pending: int
    """Records in the buffer, not yet written."""
    dropped: int
    """Records dropped because the buffer was full."""
    failed: int
    """Records lost because the database could not be written."""

    @property
    def lost(self) -> int:
        return self.dropped + self.failed


class DecisionLog:
    """Writes request records to a database in the background; reads them back for the CLI,
    calibration and learned scorers."""

    def __init__(
        self,
        target: str | Path,
        *,
        batch_size: int = 200,
        flush_interval: float = 0.5,
        max_buffer: int = 10_000,
        store_content: bool = False,
        retry_for: float = 30.0,
        report_interval: float = 60.0,
    ) -> None:
        """``store_content``: also record the request and every rung's answer text, which is
        what learning a scorer from the log needs. Off by default: prompts and answers may hold
        personal data. ``retry_for``: seconds a batch the database refuses is retried before its
        records count as lost. ``report_interval``: seconds between two loss warnings."""
        if batch_size < 1 or max_buffer < 1 or flush_interval <= 0 or retry_for < 0 or report_interval <= 0:
            raise ConfigError(
                "decision_log",
                "batch_size, max_buffer, flush_interval and report_interval must be positive, retry_for >= 0",
            )
        self.url = database_url(target)
        register_url_secrets(self.url)
        _check_target(self.url)
        # The engine (and so the database driver's import) is made here, in the caller's thread:
        # if the writer thread imported the driver, a fork() in the middle of that import would
        # leave the child's import state broken. It connects on first use only.
        try:
            self._engine = _make_engine(self.url)
        except (SQLAlchemyError, ValueError) as exc:
            raise ConfigError("decision_log", f"cannot use {safe_url(self.url)}: {exc}") from None
        self._schema_ready = False
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.store_content = store_content
        self.retry_for = retry_for
        self.report_interval = report_interval
        self._buffer: deque[dict[str, Any] | Deferred] = deque()
        self._closed = False
        self._reset_process_state()
        _live_logs.add(self)
        atexit.register(self.close)

    def _reset_process_state(self) -> None:
        """Everything that belongs to one process: locks, the writer thread, the connections."""
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._written = self._dropped = self._failed = 0
        self._unreported = 0
        self._last_report = -math.inf
        self._thread: threading.Thread | None = None
        self._engine_lock = threading.Lock()

    def _after_fork(self) -> None:
        # The parent's writer thread does not exist here and its locks may have been held at the
        # fork; its queued records are the parent's to write. Its pooled connections must not be
        # used (nor closed) from this process.
        self._buffer = deque()
        self._reset_process_state()
        # A new engine: the parent's pool and statement cache have locks of their own that its
        # writer may have held at the fork. Its connections are left to the parent.
        self._engine.dispose(close=False)
        self._engine = _make_engine(self.url)
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"DecisionLog({safe_url(self.url)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy in another process (a pickled model) writes to the same database.
        return (_reopen, (self.url, self.store_content))

    def __deepcopy__(self, memo: dict[int, Any]) -> DecisionLog:
        return self  # a log is a shared resource, like a connection pool

    # -- writing -------------------------------------------------------------------------------

    def record(self, record: Mapping[str, Any] | Deferred) -> None:
        """Queue one request record (a row, or a ``Deferred`` that builds it on the writer
        thread). Never blocks, never raises."""
        if self._pid != os.getpid():  # forked without the at-fork hook (e.g. os.fork from C)
            self._after_fork()
        with self._cond:
            if self._closed or len(self._buffer) >= self.max_buffer:
                self._dropped += 1
                lost_now = True
            else:
                self._buffer.append(record if isinstance(record, Deferred) else dict(record))
                lost_now = False
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="cascade-decision-log", daemon=True
                    )
                    self._thread.start()
                if len(self._buffer) >= self.batch_size:
                    self._cond.notify()
        if lost_now:
            self._lost(1, "the log is closed" if self._closed else "the buffer is full")

    def count_lost(self, exc: BaseException) -> None:
        """Count a record that could not even be built (a bug): it is lost, and said so."""
        with self._cond:
            self._failed += 1
        self._lost(1, "a record could not be built", exc)

    def _lost(self, n: int, why: str, exc: BaseException | None = None) -> None:
        """Count ``n`` lost records in the metric; warn at most once per ``report_interval``,
        with how many were lost since the last warning."""
        metrics.add(_lost_counter(), n, {"reason": why})
        now = time.monotonic()
        with self._cond:
            self._unreported += n
            if now - self._last_report < self.report_interval:
                return
            count, self._unreported, self._last_report = self._unreported, 0, now
            total = self._dropped + self._failed
        _log.warning(
            "cascade-router decision log %s: %d record(s) lost since the last report (%d in all) "
            "because %s%s; requests are unaffected, losses are counted in DecisionLog.stats()",
            safe_url(self.url),
            count,
            total,
            why,
            f" ({type(exc).__name__}: {redact(str(exc))[:300]})" if exc else "",
        )

    def engine(self) -> SqlEngine:
        """The SQLAlchemy engine, the schema checked (and created) on first use."""
        with self._engine_lock:
            if not self._schema_ready:
                try:
                    ensure_schema(self._engine)
                except BaseException:
                    self._engine.dispose()
                    raise
                self._schema_ready = True
            return self._engine

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._buffer and not self._closed:
                    self._cond.wait(self.flush_interval)
                if not self._buffer:
                    if self._closed:
                        return
                    continue
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
                self._in_flight = len(batch)
            self._write(batch)
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _insert(self, batch: list[dict[str, Any]]) -> None:
        try:
            with _guard.db_call(), self.engine().begin() as conn:
                conn.execute(requests_table.insert(), batch)
        except SQLAlchemyError:
            # Connections broken by a server restart are not reused on the next try.
            self._engine.dispose()
            raise

    def _rows(self, batch: list[dict[str, Any] | Deferred]) -> list[dict[str, Any]]:
        rows = []
        for item in batch:
            if not isinstance(item, Deferred):
                rows.append(item)
                continue
            try:
                rows.append(dict(item.build()))
            except Exception as exc:  # a record that cannot even be built is counted as lost
                self.count_lost(exc)
        return rows

    def _write(self, batch: list[dict[str, Any] | Deferred]) -> None:
        rows = self._rows(batch)
        if not rows:
            return
        retrying = Retrying(
            stop=stop_after_delay(self.retry_for),
            wait=wait_exponential(multiplier=0.1, max=5),
            retry=retry_if_exception_type(SQLAlchemyError),
            reraise=True,
        )
        try:
            retrying(self._insert, rows)
        except Exception as exc:
            with self._cond:
                self._failed += len(rows)
            self._lost(len(rows), "the database cannot be written", exc)
        else:
            with self._cond:
                self._written += len(rows)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every queued record has been written (or lost). True when done in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._buffer or self._in_flight:
                if self._thread is None or not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(min(0.05, remaining) if remaining is not None else 0.05)
                self._cond.notify_all()
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the writer. Later records are dropped and counted;
        records that could not be written in ``timeout`` are counted and reported as lost."""
        if self._closed:
            return
        if self._pid != os.getpid():
            self._after_fork()
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            left = len(self._buffer)
            self._buffer.clear()
            self._failed += left
        if left:
            self._last_report = -math.inf  # closing: say it now, whatever the interval
            self._lost(left, f"the log was closed before they could be written (within {timeout} s)")
        self._engine.dispose()
        atexit.unregister(self.close)

    def stats(self) -> LogStats:
        with self._cond:
            return LogStats(self._written, len(self._buffer) + self._in_flight, self._dropped, self._failed)

    # -- feedback and reading ------------------------------------------------------------------

    def record_feedback(
        self,
        request_id: str,
        score: float | bool,
        comment: str | None = None,
        *,
        rung: int | None = None,
        require_known: bool = True,
    ) -> None:
        """Attach a rating or label to a logged request (written now, not batched).

        ``score`` is a quality in [0, 1], or a bool for a thumbs up / down. ``rung=None`` rates
        the answer the user got; ``rung=i`` rates rung i's answer, as a grader labelling every
        attempt would (what learning and calibrating from the log need). A request id this log
        has never seen is refused (a typo would otherwise label nothing); ``require_known=False``
        accepts it, for feedback that may arrive before another process has written its record.
        """
        if isinstance(score, bool):  # a thumbs up / down
            score = 1.0 if score else 0.0
        value = _as_number(score)
        if value is None or not 0.0 <= value <= 1.0:
            raise ConfigError("score", f"expected a number in [0, 1] or a bool, got {score!r}")
        if rung is not None and (isinstance(rung, bool) or not isinstance(rung, int) or rung < 0):
            raise ConfigError("rung", f"expected a rung index (0, 1, ...), got {rung!r}")
        if require_known and not self._knows(request_id):
            raise ConfigError("request_id", f"no request {request_id!r} in {self!r}")
        with _guard.db_call(), self.engine().begin() as conn:
            conn.execute(
                feedback_table.insert(),
                {
                    "request_id": request_id,
                    "created_at": datetime.now(UTC),
                    "score": value,
                    "comment": comment,
                    "rung": rung,
                },
            )

    def _knows(self, request_id: str) -> bool:
        with self._cond:
            if any(
                (r.request_id if isinstance(r, Deferred) else r.get("request_id")) == request_id
                for r in self._buffer
            ):
                return True
        # A batch may be on its way to the database right now: wait for it before looking.
        self.flush(timeout=5.0)
        with _guard.db_call(), self.engine().connect() as conn:
            found = conn.execute(
                select(requests_table.c.request_id).where(requests_table.c.request_id == request_id)
            ).first()
        return found is not None

    def _feedback(self, request_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        if not request_ids:
            return out
        with _guard.db_call(), self.engine().connect() as conn:
            rows = conn.execute(
                select(feedback_table)
                .where(feedback_table.c.request_id.in_(request_ids))
                .order_by(feedback_table.c.id)
            ).mappings()
            for row in rows:
                out.setdefault(row["request_id"], []).append(
                    {
                        "score": row["score"],
                        "comment": row["comment"],
                        "rung": row["rung"],
                        "created_at": row["created_at"].isoformat(),
                    }
                )
        return out

    @staticmethod
    def _row(row: Any) -> dict[str, Any]:
        out = dict(row)
        created = out["created_at"]
        out["created_at"] = created.isoformat() if isinstance(created, datetime) else created
        return out

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        with _guard.db_call(), self.engine().connect() as conn:
            rows = conn.execute(
                select(requests_table).order_by(requests_table.c.created_at.desc()).limit(limit)
            ).mappings()
            return [self._row(r) for r in rows]

    def get(self, request_id: str) -> dict[str, Any] | None:
        with _guard.db_call(), self.engine().connect() as conn:
            row = (
                conn.execute(select(requests_table).where(requests_table.c.request_id == request_id))
                .mappings()
                .first()
            )
        if row is None:
            return None
        record = self._row(row)
        record["feedback"] = self._feedback([request_id]).get(request_id, [])
        return record

    def ids_starting_with(self, prefix: str, limit: int = 2) -> list[str]:
        """Request ids that begin with ``prefix`` (at most ``limit``), for ids cut short on a
        screen; ``prefix`` is matched literally."""
        if not prefix:
            return []
        with _guard.db_call(), self.engine().connect() as conn:
            rows = conn.execute(
                select(requests_table.c.request_id)
                .where(requests_table.c.request_id.startswith(prefix, autoescape=True))
                .limit(limit)
            )
            return [row[0] for row in rows]

    def iter_records(self, batch: int = 500, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every record (made at or after ``since``, when given), oldest first, each with its
        feedback."""
        offset = 0
        query = select(requests_table)
        if since is not None:
            query = query.where(requests_table.c.created_at >= since)
        while True:
            with _guard.db_call(), self.engine().connect() as conn:
                rows = [
                    self._row(r)
                    for r in conn.execute(
                        query.order_by(requests_table.c.created_at, requests_table.c.request_id)
                        .offset(offset)
                        .limit(batch)
                    ).mappings()
                ]
            if not rows:
                return
            feedback = self._feedback([r["request_id"] for r in rows])
            for r in rows:
                r["feedback"] = feedback.get(r["request_id"], [])
                yield r
            offset += len(rows)


def _as_number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _reopen(url: str, store_content: bool) -> DecisionLog:
    log = shared_log(url)
    log.store_content = log.store_content or store_content
    return log


class _Registry:
    """The process's shared logs, one per URL."""

    def __init__(self) -> None:
        self.logs: dict[str, DecisionLog] = {}
        self.lock = threading.Lock()


_registry = _Registry()


def shared_log(target: str | Path | DecisionLog) -> DecisionLog:
    """One ``DecisionLog`` per URL in a process, so that many models share one writer."""
    if isinstance(target, DecisionLog):
        return target
    url = database_url(target)
    with _registry.lock:
        log = _registry.logs.get(url)
        if log is None or log._closed:
            log = _registry.logs[url] = DecisionLog(url)
        return log


def record_feedback(
    request_id: str,
    score: float,
    comment: str | None = None,
    *,
    db: str | Path | DecisionLog,
    rung: int | None = None,
) -> None:
    """Attach a user's rating or a label to the logged request ``request_id`` (``rung``: which
    rung's answer it rates; None, the one the user got)."""
    shared_log(db).record_feedback(request_id, score, comment, rung=rung)
