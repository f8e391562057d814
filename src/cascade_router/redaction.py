"""Keeping secrets out of error texts that go into results, spans and the decision log.

Provider errors sometimes quote credentials (a bad API key, a URL with a password). Error texts
pass through ``redact`` before they are stored anywhere.
"""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"),  # OpenAI / Anthropic style keys
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-]{12,}"),
    re.compile(r"(?i)(api[_-]?key|token|password)=([^&\s\"']{6,})"),
    re.compile(r"(?<=://)([^:/@\s]+):([^@/\s]+)@"),  # user:password@ in URLs
)
REDACTED = "[REDACTED]"


def _env_secrets() -> list[str]:
    return [
        value
        for name, value in os.environ.items()
        if len(value) >= 8 and _SECRET_NAME.search(name) and not value.isdigit()
    ]


def redact(text: str) -> str:
    """``text`` with secret-looking substrings, and the values of secret environment variables,
    replaced by ``[REDACTED]``."""
    for secret in _env_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text
