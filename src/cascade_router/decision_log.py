"""The decision log: one record per request, written off the request path.

Records go into a bounded in-memory buffer; a background thread writes them in batches through
SQLAlchemy (SQLite by default, PostgreSQL when several processes share a log). The buffer is
flushed on ``close()`` and at interpreter exit, so nothing is lost on a clean shutdown. When the
buffer is full or the database cannot be written, records are dropped and *counted*
(``stats()``), and the first loss is logged once: the log never blocks or fails a request.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
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
from sqlalchemy.engine import Engine as SqlEngine

from cascade_router.errors import ConfigError
from cascade_router.redaction import redact

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


def ensure_schema(engine: SqlEngine) -> None:
    """Create the tables on first use and check the schema version."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        version = conn.execute(select(func.max(schema_table.c.version))).scalar()
        if version is None:
            conn.execute(schema_table.insert(), {"version": SCHEMA_VERSION})
        elif version == 1:
            conn.execute(text("ALTER TABLE cascade_requests ADD COLUMN content JSON"))
            conn.execute(text("ALTER TABLE cascade_feedback ADD COLUMN rung INTEGER"))
            conn.execute(schema_table.insert(), {"version": SCHEMA_VERSION})
        elif version > SCHEMA_VERSION:
            raise RuntimeError(
                f"this decision log has schema version {version}, newer than this cascade-router "
                f"understands ({SCHEMA_VERSION}); upgrade cascade-router"
            )


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
    ) -> None:
        """``store_content``: also record the request and every rung's answer text, which is
        what learning a scorer from the log needs. Off by default: prompts and answers may hold
        personal data."""
        if batch_size < 1 or max_buffer < 1 or flush_interval <= 0:
            raise ConfigError("decision_log", "batch_size, max_buffer and flush_interval must be positive")
        self.url = database_url(target)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.store_content = store_content
        self._buffer: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._written = self._dropped = self._failed = 0
        self._loss_reported = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._engine: SqlEngine | None = None
        self._engine_lock = threading.Lock()
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"DecisionLog({_redact(self.url)!r})"

    # -- writing -------------------------------------------------------------------------------

    def record(self, record: Mapping[str, Any]) -> None:
        """Queue one request record. Never blocks, never raises."""
        with self._cond:
            if self._closed or len(self._buffer) >= self.max_buffer:
                self._dropped += 1
                lost_now = True
            else:
                self._buffer.append(dict(record))
                lost_now = False
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="cascade-decision-log", daemon=True
                    )
                    self._thread.start()
                if len(self._buffer) >= self.batch_size:
                    self._cond.notify()
        if lost_now:
            self._report_loss("the buffer is full" if not self._closed else "the log is closed")

    def _report_loss(self, why: str, exc: BaseException | None = None) -> None:
        with self._cond:
            if self._loss_reported:
                return
            self._loss_reported = True
        _log.warning(
            "cascade-router decision log %s: records are being dropped because %s%s; requests are "
            "unaffected, losses are counted in DecisionLog.stats()",
            _redact(self.url),
            why,
            f" ({type(exc).__name__}: {redact(str(exc))[:300]})" if exc else "",
        )

    def engine(self) -> SqlEngine:
        with self._engine_lock:
            if self._engine is None:
                engine = _make_engine(self.url)
                ensure_schema(engine)
                self._engine = engine
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

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            with self.engine().begin() as conn:
                conn.execute(requests_table.insert(), batch)
        except Exception as exc:
            with self._cond:
                self._failed += len(batch)
                # A broken engine (server gone) is rebuilt on the next batch.
                self._engine = None
            self._report_loss("the database cannot be written", exc)
        else:
            with self._cond:
                self._written += len(batch)

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
        """Write what is queued, then stop the writer. Later records are dropped and counted."""
        if self._closed:
            return
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
        atexit.unregister(self.close)

    def stats(self) -> LogStats:
        with self._cond:
            return LogStats(self._written, len(self._buffer) + self._in_flight, self._dropped, self._failed)

    # -- feedback and reading ------------------------------------------------------------------

    def record_feedback(
        self, request_id: str, score: float, comment: str | None = None, *, rung: int | None = None
    ) -> None:
        """Attach a rating or label to a logged request (written now, not batched).

        ``rung=None`` rates the answer the user got; ``rung=i`` rates rung i's answer, as a grader
        labelling every attempt would (what learning and calibrating from the log need)."""
        if isinstance(score, bool):  # a thumbs up / down
            score = 1.0 if score else 0.0
        if not isinstance(score, int | float) or math.isnan(score):
            raise ConfigError("score", f"expected a number or a bool, got {score!r}")
        with self.engine().begin() as conn:
            conn.execute(
                feedback_table.insert(),
                {
                    "request_id": request_id,
                    "created_at": datetime.now(UTC),
                    "score": float(score),
                    "comment": comment,
                    "rung": rung,
                },
            )

    def _feedback(self, request_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        if not request_ids:
            return out
        with self.engine().connect() as conn:
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
        with self.engine().connect() as conn:
            rows = conn.execute(
                select(requests_table).order_by(requests_table.c.created_at.desc()).limit(limit)
            ).mappings()
            return [self._row(r) for r in rows]

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self.engine().connect() as conn:
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

    def iter_records(self, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every record, oldest first, each with its feedback."""
        offset = 0
        while True:
            with self.engine().connect() as conn:
                rows = [
                    self._row(r)
                    for r in conn.execute(
                        select(requests_table)
                        .order_by(requests_table.c.created_at, requests_table.c.request_id)
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


def _redact(url: str) -> str:
    """A URL without its password, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<decision log URL>"


_shared: dict[str, DecisionLog] = {}
_shared_lock = threading.Lock()


def shared_log(target: str | Path | DecisionLog) -> DecisionLog:
    """One ``DecisionLog`` per URL in a process, so that many models share one writer."""
    if isinstance(target, DecisionLog):
        return target
    url = database_url(target)
    with _shared_lock:
        log = _shared.get(url)
        if log is None or log._closed:
            log = _shared[url] = DecisionLog(url)
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
