"""API keys for the server: made once, kept only as a hash, checked on every request.

A key is ``cr-`` and 43 characters of ``secrets.token_urlsafe`` (256 random bits). The store
keeps its SHA-256, never the key: with 256 bits of entropy a fast hash cannot be guessed
backwards, so a slow password hash (bcrypt, argon2) would add milliseconds to every request
for nothing (the reasoning behind GitHub's and Stripe's token stores too). Each key names the
ladders it may use, a rate limit (requests a minute) and a budget (US dollars an hour, day or
month). The store is any SQLAlchemy database; replicas share it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, Text, select, update
from sqlalchemy.engine import Engine as SqlEngine

from cascade_router.errors import ConfigError
from cascade_router.observability.redaction import safe_url

Period = Literal["hour", "day", "month"]

_metadata = MetaData()
_keys = Table(
    "cascade_api_keys",
    _metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_sha256", String(64), nullable=False, unique=True),
    Column("ladders", Text, nullable=False),
    Column("rpm", Integer, nullable=True),
    Column("budget_usd", Float, nullable=True),
    Column("budget_per", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's record (never the key itself)."""

    id: str
    name: str
    prefix: str
    """The key's first characters, to recognise it in a list."""
    ladders: tuple[str, ...]
    """The ladders (model names) it may use; ``("*",)``: all."""
    rpm: int | None
    """Requests a minute, across every server process; None: no limit."""
    budget_usd: float | None
    """US dollars per ``budget_per``; None: no budget."""
    budget_per: Period
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, ladder: str) -> bool:
        return "*" in self.ladders or ladder in self.ladders

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "ladders": list(self.ladders),
            "rpm": self.rpm,
            "budget_usd": self.budget_usd,
            "budget_per": self.budget_per,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _record(row: Any) -> ApiKey:
    def aware(value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    created = aware(row.created_at)
    assert created is not None
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        ladders=tuple(json.loads(row.ladders)),
        rpm=row.rpm,
        budget_usd=row.budget_usd,
        budget_per=row.budget_per,
        created_at=created,
        revoked_at=aware(row.revoked_at),
    )


class KeyStore:
    """Keys in a SQL database (``sqlite:///keys.db``, ``postgresql+psycopg://...``, or a plain
    file path for SQLite). Lookups are cached for ``cache_s`` seconds per process."""

    def __init__(self, url: str | Path, *, cache_s: float = 5.0) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import ArgumentError

        url = str(url)
        target = url if "://" in url else f"sqlite:///{url}"
        self.url = safe_url(target)
        try:
            self._engine: SqlEngine = create_engine(target, pool_pre_ping=True)
        except (ArgumentError, ImportError) as exc:
            raise ConfigError("keys", f"cannot open the key store {self.url}: {exc}") from None
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()
        self._ready = False

    def __repr__(self) -> str:
        return f"KeyStore({self.url!r})"

    def _tables(self) -> None:
        if not self._ready:
            _metadata.create_all(self._engine)
            self._ready = True

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
        self._tables()
        with self._engine.connect() as conn:
            conn.execute(select(_keys.c.id).limit(1))

    def create(
        self,
        name: str,
        *,
        ladders: tuple[str, ...] = ("*",),
        rpm: int | None = None,
        budget_usd: float | None = None,
        budget_per: Period = "day",
    ) -> tuple[str, ApiKey]:
        """A new key: the key itself (shown once, kept nowhere) and its record."""
        if not name.strip():
            raise ConfigError("name", "a key needs a name")
        if rpm is not None and rpm < 1:
            raise ConfigError("rpm", "must be at least 1 request a minute")
        if budget_usd is not None and not budget_usd > 0:
            raise ConfigError("budget_usd", "must be more than 0")
        if budget_per not in ("hour", "day", "month"):
            raise ConfigError("budget_per", "must be hour, day or month")
        if not ladders:
            raise ConfigError("ladders", "a key needs at least one ladder ('*' for all)")
        self._tables()
        key = "cr-" + secrets.token_urlsafe(32)
        record = ApiKey(
            id=secrets.token_hex(6),
            name=name,
            prefix=key[:9],
            ladders=tuple(ladders),
            rpm=rpm,
            budget_usd=budget_usd,
            budget_per=budget_per,
            created_at=datetime.now(UTC),
            revoked_at=None,
        )
        with self._engine.begin() as conn:
            conn.execute(
                _keys.insert().values(
                    id=record.id,
                    name=name,
                    prefix=record.prefix,
                    key_sha256=key_hash(key),
                    ladders=json.dumps(list(ladders)),
                    rpm=rpm,
                    budget_usd=budget_usd,
                    budget_per=budget_per,
                    created_at=record.created_at,
                )
            )
        return key, record

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        self._tables()
        query = select(_keys).order_by(_keys.c.created_at)
        if not include_revoked:
            query = query.where(_keys.c.revoked_at.is_(None))
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by its id (or its prefix); every process stops accepting it within the
        cache time."""
        self._tables()
        with self._engine.begin() as conn:
            rows = list(
                conn.execute(select(_keys).where((_keys.c.id == key_id) | (_keys.c.prefix == key_id)))
            )
            if len(rows) != 1:
                raise ConfigError(
                    "id", f"no key {key_id!r}" if not rows else f"{key_id!r} names several keys"
                )
            conn.execute(update(_keys).where(_keys.c.id == rows[0].id).values(revoked_at=datetime.now(UTC)))
            row = conn.execute(select(_keys).where(_keys.c.id == rows[0].id)).one()
        with self._lock:
            self._cache.clear()
        return _record(row)

    def cached(self, key: str) -> tuple[bool, ApiKey | None]:
        """``(True, record or None)`` when this process looked the key up within the cache
        time; ``(False, None)`` when ``check`` must ask the database."""
        with self._lock:
            hit = self._cache.get(key_hash(key))
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def check(self, key: str) -> ApiKey | None:
        """The record of a valid, unrevoked key, or None."""
        digest = key_hash(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        self._tables()
        with self._engine.connect() as conn:
            row = conn.execute(select(_keys).where(_keys.c.key_sha256 == digest)).first()
        record = _record(row) if row is not None else None
        if record is not None and record.revoked_at is not None:
            record = None
        with self._lock:
            if len(self._cache) > 10_000:  # bound the memory a flood of made-up keys can take
                self._cache.clear()
            self._cache[digest] = (now + self._cache_s, record)
        return record

    def close(self) -> None:
        self._engine.dispose()
