"""Keeping secrets out of everything the cascade shows: error texts, reprs, spans, logs, records.

Three layers, because no single one catches everything:

- **known secrets**: every backend and decision log registers the keys and passwords it was
  given (``register_secret``), so an opaque 32-hex key echoed back in a provider's 401 is caught
  by value, whatever its shape;
- **secret environment variables**: the values of ``*_API_KEY``, ``*_TOKEN``, ``*PASSWORD*``...;
- **patterns**: ``sk-...`` keys, bearer tokens, ``password=...`` and ``user:password@`` in URLs.

``redact`` applies all three to a text; ``scrub`` to a value about to be shown (a repr, a
serialized config): mappings lose the values of secret-named keys, strings are redacted.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

_SECRET_NAME = re.compile(
    # "TOKEN" but not "max_tokens", "token_count" or "tokenizer": those are settings, not secrets.
    r"(API[_-]?KEY|ACCESS[_-]?KEY|TOKEN(?!S|_?COUNT|IZER)|SECRET|PASSW(OR)?D|CREDENTIAL|AUTHORIZATION)",
    re.IGNORECASE,
)
_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"),  # OpenAI / Anthropic style keys
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-]{12,}"),
    re.compile(r"(?i)(api[_-]?key|token|password|secret)=([^&\s\"']{6,})"),
    re.compile(r"(?<=://)([^:/@\s]+):([^@/\s]+)@"),  # user:password@ in URLs
)
REDACTED = "[REDACTED]"
MASK = "**********"
_MIN_SECRET = 8
"""Shorter values are not registered: replacing them would mangle ordinary words (a test
database whose password is its user name, say). Provider keys are far longer."""

_known: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Redact ``value`` wherever it appears from now on (an API key, a database password)."""
    if value and len(value) >= _MIN_SECRET:
        with _known_lock:
            _known.add(value)


def register_url_secrets(url: str) -> None:
    """Register the password (and query-string tokens) of a URL."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return
    register_secret(parts.password)
    for key, value in parse_qsl(parts.query):
        if is_secret_name(key):
            register_secret(value)


def _env_secrets() -> list[str]:
    return [
        value
        for name, value in os.environ.items()
        if len(value) >= 8 and _SECRET_NAME.search(name) and not value.isdigit()
    ]


def redact(text: str) -> str:
    """``text`` with registered secrets, secret environment variables and secret-looking
    substrings replaced by ``[REDACTED]``."""
    with _known_lock:
        known = list(_known)
    # Longest first, so that a secret containing another is replaced whole.
    for secret in sorted({*known, *_env_secrets()}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def is_secret_name(name: str) -> bool:
    """Whether a key or field called ``name`` holds a credential (``api_key``, ``password``...)."""
    return bool(_SECRET_NAME.search(name))


def scrub(value: Any) -> Any:
    """A copy of ``value`` safe to show: secret-named mapping entries masked, strings redacted,
    lists and tuples scrubbed item by item. Other objects are returned as they are (their own
    repr must be safe)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: MASK if isinstance(k, str) and is_secret_name(k) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v) for v in value)
    return value


def safe_url(url: str) -> str:
    """A URL without its password, for reprs, messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return redact(url)


def register_object_secrets(obj: Any) -> None:
    """Register the credentials a framework's model object holds: ``SecretStr`` fields, fields
    with secret names (``api_key``, ``password``), passwords in URL fields and secret headers.

    For objects whose keys we never see (a LangChain or LlamaIndex model built by the user): a
    provider that echoes the key back in an error must not get it into a span or the log.
    """
    from pydantic import SecretBytes, SecretStr

    fields = getattr(obj, "__dict__", None)
    if not isinstance(fields, Mapping):
        return
    for name, value in fields.items():
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
        elif isinstance(value, SecretBytes):
            register_secret(value.get_secret_value().decode(errors="ignore"))
        elif isinstance(value, str):
            if is_secret_name(str(name)):
                register_secret(value)
            elif "://" in value:
                register_url_secrets(value)
        elif isinstance(value, Mapping):  # headers, client kwargs
            for key, inner in value.items():
                if isinstance(key, str) and is_secret_name(key) and isinstance(inner, str):
                    register_secret(inner.removeprefix("Bearer ").strip())
