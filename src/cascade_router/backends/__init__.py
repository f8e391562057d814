"""Native backends: rungs built directly on provider SDKs, no LLM framework needed.

``backend_from`` turns what a config file can hold into one:

- ``"openai:gpt-4o-mini"`` or ``"anthropic:claude-haiku-4-5"``;
- ``{"provider": "openai", "model": "gemma", "base_url": "http://127.0.0.1:8177/v1", "max_tokens": 64}``:
  every other key is passed to the backend (``base_url``, ``max_tokens``, ``temperature``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cascade_router.backend import Backend
from cascade_router.errors import ConfigError
from cascade_router.model_spec import model_spec

PROVIDERS = ("openai", "anthropic")


def _build(provider: str, model: str, options: dict[str, Any], field: str) -> Backend:
    if provider == "openai":
        from cascade_router.backends.openai import OpenAIBackend

        return OpenAIBackend(model, **options)
    if provider == "anthropic":
        from cascade_router.backends.anthropic import AnthropicBackend

        return AnthropicBackend(model, **options)
    if provider == "scripted":
        # The test fake, so that a config file (a server's, say) can hold a scripted ladder.
        from cascade_router.testing import ScriptedBackend

        replies = options.pop("replies", None) or ["ok"]
        try:
            return ScriptedBackend(model, replies, **options)
        except ValueError as exc:
            raise ConfigError(field, f"scripted backend: {exc}") from None
    raise ConfigError(
        field, f"no native backend for provider {provider!r}; known: {', '.join(PROVIDERS)} (and scripted)"
    )


def backend_from(spec: Any, field: str) -> Backend:
    """A ``Backend`` from a backend object, a ``provider:model`` string or a mapping."""
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, str):
        provider, sep, model = spec.partition(":")
        if not sep or not provider or not model:
            raise ConfigError(field, f"expected 'provider:model' (e.g. 'openai:gpt-4o-mini'), got {spec!r}")
        return _build(provider, model, {}, field)
    if isinstance(spec, Mapping):
        # The same mapping format (and secret registration) as the adapters read.
        parsed = model_spec(spec, field)
        try:
            return _build(parsed.provider, parsed.model, dict(parsed.options), field)
        except TypeError as exc:
            raise ConfigError(field, f"bad option for the {parsed.provider} backend: {exc}") from exc
    raise ConfigError(
        field,
        "expected a cascade_router Backend, a 'provider:model' string or a mapping, "
        f"got {type(spec).__name__}",
    )


__all__ = ["PROVIDERS", "backend_from"]
