"""Shared test setup: no real network (loopback only), scripted models everywhere."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that needs a key sets a fake one itself; none may reach a real provider.
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(key, raising=False)
