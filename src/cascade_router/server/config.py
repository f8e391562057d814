"""What ``cascade-router serve`` reads: named ladders and the server's own settings.

```yaml
state: redis://127.0.0.1:6379/0          # rate limits, budgets, breakers shared by replicas
decision_log: postgresql+psycopg://...   # for every ladder that names none
keys: postgresql+psycopg://...           # API keys (hashed); none: no keys, loopback only
ladders:
  support-bot:
    rungs: [...]
```

A single-ladder file (what ``Cascade.from_config`` reads) works too: its ``name`` is the model
name clients ask for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from cascade_router.config import (
    LadderConfig,
    read_config_file,
    resolve_ladder_paths,
    validation_problem,
)
from cascade_router.errors import ConfigError
from cascade_router.observability.redaction import safe_url

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class ServerConfig(BaseModel):
    """The server's settings and its ladders, each served under its own model name."""

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True, hide_input_in_errors=True
    )

    ladders: dict[str, LadderConfig] = Field(min_length=1)
    """Model name to ladder: a request's ``model`` picks one. Names are letters, digits and
    ``._:/-``."""
    state: str | None = None
    """``redis://...``: rate limits, key budgets, circuit breakers and budget rules are counted
    in this Redis, so that every server process behind a load balancer shares them. None: in
    this process (one process only)."""
    latency_sync_s: float = Field(default=1.0, gt=0, le=3600, allow_inf_nan=False)
    """With a shared ``state``: how often each process pools the rung latencies it observed
    (what the ``deadline`` rule and hedging estimate from) with the other processes'."""
    decision_log: str | None = None
    """The decision log (SQLite path or SQLAlchemy URL) of every ladder that names none."""
    keys: str | None = None
    """The API key store, a SQLAlchemy URL (``sqlite:///keys.db``, ``postgresql+psycopg://...``)
    that ``cascade-router keys`` writes. None: no keys; the server then accepts any request but
    binds only a loopback address unless started with ``--insecure-no-auth``."""
    key_cache_s: float = Field(default=5.0, ge=0, le=3600, allow_inf_nan=False)
    """How long a key looked up in the store is trusted: a revoked key stops working within
    this many seconds on every server process."""
    max_body_bytes: int = Field(default=4_000_000, ge=1024, le=1_000_000_000)
    """The largest request body accepted; a larger one is refused with 413."""
    request_timeout_s: float | None = Field(default=600.0, gt=0, le=86_400, allow_inf_nan=False)
    """The most a request may take; past it the server answers 504 and the request's calls are
    cancelled. Also the deadline handed to a ladder's ``deadline`` rule. None: no limit."""
    shutdown_grace_s: float = Field(default=30.0, ge=0, le=3600, allow_inf_nan=False)
    """On SIGTERM, how long requests in flight may take to finish before they are cut off;
    the decision log is flushed after them."""

    def __repr_args__(self) -> Any:
        # Store URLs may carry a password: shown without it, as every URL the server prints.
        for name, value in super().__repr_args__():
            hidden = name in ("state", "decision_log", "keys") and isinstance(value, str)
            yield name, safe_url(value) if hidden else value

    @field_serializer("state", "decision_log", "keys")
    def _url_shown(self, value: str | None) -> str | None:
        return None if value is None else safe_url(value)

    @field_validator("ladders", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        named: dict[str, Any] = {}
        for name, ladder in value.items():
            named[str(name)] = (
                {**ladder, "name": ladder.get("name", name)} if isinstance(ladder, Mapping) else ladder
            )
        return named

    @field_validator("ladders")
    @classmethod
    def _names(cls, value: dict[str, LadderConfig]) -> dict[str, LadderConfig]:
        import re

        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"{name!r} is not a usable model name (letters, digits and ._:/- only)")
        return value


def server_config(data: Mapping[str, Any], *, where: str | None = None) -> ServerConfig:
    """A ``ServerConfig`` from a mapping: a server file (``ladders:``) or one ladder (``rungs:``).
    Mistakes are ``ConfigError``s naming the field (``ladders.support-bot.rungs[1].threshold``)."""
    if "rungs" in data:
        if "ladders" in data:
            raise ConfigError(where or "config", "give either 'rungs' (one ladder) or 'ladders', not both")
        data = {"ladders": {str(data.get("name", "cascade")): dict(data)}}
    data = dict(data)
    ladders = data.get("ladders")
    if isinstance(ladders, Mapping):
        checked: dict[str, Any] = {}
        for name, ladder in ladders.items():
            if not isinstance(ladder, Mapping):
                raise ConfigError(_at(where, f"ladders.{name}"), "expected a ladder mapping with 'rungs'")
            try:
                checked[str(name)] = LadderConfig.model_validate({**ladder, "name": ladder.get("name", name)})
            except ValidationError as exc:
                field, problem = validation_problem(exc)
                raise ConfigError(_at(where, f"ladders.{name}.{field}"), problem) from None
            except ConfigError as exc:
                raise ConfigError(_at(where, f"ladders.{name}.{exc.field}"), exc.problem) from None
        data["ladders"] = checked
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        field, problem = validation_problem(exc)
    except ConfigError as exc:
        field, problem = exc.field, exc.problem
    raise ConfigError(_at(where, field), problem) from None


def _at(where: str | None, field: str) -> str:
    return f"{where}: {field}" if where else field


def load_server_config(source: str | Path | Mapping[str, Any] | ServerConfig) -> ServerConfig:
    """A ``ServerConfig`` from a YAML, TOML or JSON file, a mapping, or itself."""
    if isinstance(source, ServerConfig):
        return source
    if isinstance(source, Mapping):
        return server_config(source)
    data = read_config_file(source)
    base = Path(source).parent
    for ladder in (data.get("ladders") or {}).values() if isinstance(data.get("ladders"), dict) else ():
        if isinstance(ladder, dict):
            resolve_ladder_paths(ladder, base)
    return server_config(data, where=str(source))
