"""State that must hold across requests, and across processes when many workers serve one app.

One small interface, ``StateStore``: counters with expiry, plain values, set-if-absent (a lock
or a single probe), decimal counters with a limit (budgets) and delete. ``MemoryStore`` keeps
them in this process; ``RedisStore`` in a Redis server, so that every worker and machine sees
the same circuit breakers and budgets. ``open_store("redis://...")`` picks one from a URL.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from cascade_router.errors import ConfigError
from cascade_router.observability.redaction import safe_url


@runtime_checkable
class StateStore(Protocol):
    """Keys are strings; values are strings (counters are integers). ``ttl`` in seconds."""

    def get_many(self, keys: Sequence[str]) -> list[str | None]: ...

    def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        """Set ``key`` only if it does not exist; True when this call set it."""
        ...

    def incr(self, key: str, ttl: float | None = None) -> int:
        """Add one to the counter (0 when absent) and return it; ``ttl`` is set on creation."""
        ...

    def delete(self, *keys: str) -> None: ...

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
        ...

    def add_float(
        self, key: str, amount: float, ttl: float | None = None, limit: float | None = None
    ) -> float | None:
        """Add ``amount`` to a decimal counter (0 when absent) and return the new total, in one
        atomic step; with ``limit``, only when the total stays at or under it (else None and
        nothing changes). ``ttl`` is set on creation. What budgets reserve and settle with."""
        ...

    def push_window(
        self, key: str, values: Sequence[float], window: int, ttl: float | None = None
    ) -> list[float]:
        """Append ``values`` to a list that keeps its last ``window`` items, and return them all
        (oldest first), in one step: how replicas pool the latencies they observe."""
        ...


class MemoryStore:
    """A ``StateStore`` in this process's memory (one process; lost on restart)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[str, float | None]] = {}
        _memory_stores.add(self)

    def _live(self, key: str, now: float) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self._values[key]
            return None
        return item[0]

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        now = time.monotonic()
        with self._lock:
            return [self._live(k, now) for k in keys]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._lock:
            self._values[key] = (value, None if ttl is None else time.monotonic() + ttl)

    def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._live(key, now) is not None:
                return False
            self._values[key] = (value, now + ttl)
            return True

    def incr(self, key: str, ttl: float | None = None) -> int:
        now = time.monotonic()
        with self._lock:
            current = self._live(key, now)
            value = int(current) + 1 if current is not None else 1
            expiry = self._values[key][1] if current is not None else (None if ttl is None else now + ttl)
            self._values[key] = (str(value), expiry)
            return value

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)

    def add_float(
        self, key: str, amount: float, ttl: float | None = None, limit: float | None = None
    ) -> float | None:
        now = time.monotonic()
        with self._lock:
            current = self._live(key, now)
            total = (float(current) if current is not None else 0.0) + amount
            if limit is not None and total > limit:
                return None
            expiry = self._values[key][1] if current is not None else (None if ttl is None else now + ttl)
            self._values[key] = (repr(total), expiry)
            return total

    def push_window(
        self, key: str, values: Sequence[float], window: int, ttl: float | None = None
    ) -> list[float]:
        now = time.monotonic()
        with self._lock:
            current = self._live(key, now)
            items = [float(x) for x in current.split(",") if x] if current else []
            items = [*items, *values][-window:]
            self._values[key] = (",".join(map(repr, items)), None if ttl is None else now + ttl)
            return items

    def ping(self) -> None:
        return None

    def __repr__(self) -> str:
        return "MemoryStore()"


_ADD_FLOAT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[2] ~= '' and current + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return false
end
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3], 'NX')
end
return total
"""


class RedisStore:
    """A ``StateStore`` in Redis, shared by every process that uses the same URL.

    Needs the ``redis`` extra. Each call is one round trip (counters use a pipeline of INCR and
    an EXPIRE that only applies to a new key), and a short socket timeout: a Redis that stops
    answering must not hang requests (the caller treats a store error as "no information").
    """

    def __init__(self, url: str, *, prefix: str = "cascade:", timeout_s: float = 0.5) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError(
                "a redis:// state store needs the redis client: pip install 'cascade-router[redis]'"
            ) from None
        self._url = url
        self._prefix = prefix
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )

    def _k(self, key: str) -> str:
        return self._prefix + key

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        return list(self._client.mget([self._k(k) for k in keys]))

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._client.set(self._k(key), value, px=None if ttl is None else max(1, int(ttl * 1000)))

    def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        return bool(self._client.set(self._k(key), value, nx=True, px=max(1, int(ttl * 1000))))

    def incr(self, key: str, ttl: float | None = None) -> int:
        pipe = self._client.pipeline()
        pipe.incr(self._k(key))
        if ttl is not None:
            pipe.pexpire(self._k(key), max(1, int(ttl * 1000)), nx=True)
        return int(pipe.execute()[0])

    def delete(self, *keys: str) -> None:
        if keys:
            self._client.delete(*[self._k(k) for k in keys])

    def add_float(
        self, key: str, amount: float, ttl: float | None = None, limit: float | None = None
    ) -> float | None:
        # One script, so that the check and the addition are one step for every client.
        got = self._client.eval(
            _ADD_FLOAT,
            1,
            self._k(key),
            repr(amount),
            "" if limit is None else repr(limit),
            "" if ttl is None else str(max(1, int(ttl * 1000))),
        )
        return None if got is None else float(got)

    def push_window(
        self, key: str, values: Sequence[float], window: int, ttl: float | None = None
    ) -> list[float]:
        pipe = self._client.pipeline()  # MULTI/EXEC: push, trim and read as one step
        k = self._k(key)
        if values:
            pipe.rpush(k, *map(repr, values))
            pipe.ltrim(k, -window, -1)
            if ttl is not None:
                pipe.pexpire(k, max(1, int(ttl * 1000)))
        pipe.lrange(k, 0, -1)
        return [float(x) for x in pipe.execute()[-1]]

    def ping(self) -> None:
        self._client.ping()

    def __repr__(self) -> str:
        return f"RedisStore({safe_url(self._url)!r})"

    def __getstate__(self) -> dict[str, Any]:
        # A forked or unpickled copy opens its own connections (a socket must not be shared).
        return {"url": self._url, "prefix": self._prefix}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], prefix=state["prefix"])  # type: ignore[misc]


class _Registry:
    """The stores of this process, one per URL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stores: dict[str, StateStore] = {}


_registry = _Registry()
_memory_stores: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock another thread held at the fork would stay held forever in the child: every store
    # gets a new one (the values are the parent's, as a per-process store's should be).
    _registry.lock = threading.Lock()
    for store in list(_memory_stores):
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def open_store(url: str | None, *, field: str = "store") -> StateStore:
    """The store for ``url``: ``redis://`` / ``rediss://`` / ``unix://`` for Redis, None or
    ``memory`` for this process. One store per URL per process, shared by every ladder."""
    key = url or "memory"
    with _registry.lock:
        store = _registry.stores.get(key)
        if store is not None:
            return store
        if key == "memory":
            store = MemoryStore()
        elif key.startswith(("redis://", "rediss://", "unix://")):
            store = RedisStore(key)
        else:
            raise ConfigError(field, f"unknown state store {safe_url(key)!r}; use redis://... or memory")
        _registry.stores[key] = store
        return store
