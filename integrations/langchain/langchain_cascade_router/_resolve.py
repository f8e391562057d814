"""Turning what the user wrote in ``model`` (an object, a ``provider:model`` string or a mapping)
into a LangChain chat model, with errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel

from cascade_router.errors import ConfigError
from cascade_router.model_spec import build_error, model_spec


def resolve_chat_model(value: Any, field: str) -> BaseChatModel:
    if isinstance(value, BaseChatModel):
        return value
    if isinstance(value, str):
        from langchain.chat_models import init_chat_model

        try:
            return init_chat_model(value)
        except Exception as exc:  # provider package missing, unknown provider, no API key...
            raise ConfigError(field, f"cannot resolve model {value!r}: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, Mapping):
        return _from_mapping(value, field)
    raise ConfigError(
        field,
        f"expected a LangChain chat model (BaseChatModel), a 'provider:model' string or a mapping "
        f"{{provider, model, ...}}, got {type(value).__name__}",
    )


def _from_mapping(value: Mapping[str, Any], field: str) -> BaseChatModel:
    """``init_chat_model(model, model_provider=provider, **the other keys)``."""
    from langchain.chat_models import init_chat_model

    spec = model_spec(value, field)
    options = dict(spec.options)
    if spec.provider == "openai" and "base_url" in options and "max_tokens" in options:
        # langchain-openai sends max_tokens as max_completion_tokens, which OpenAI-compatible
        # servers such as llama.cpp's ignore (they then generate to the end of their context):
        # a self-hosted server also gets it under its old name.
        extra_body = dict(options.get("extra_body") or {})
        extra_body.setdefault("max_tokens", options["max_tokens"])
        options["extra_body"] = extra_body
    try:
        model = init_chat_model(spec.model, model_provider=spec.provider, **options)
    except Exception as exc:  # provider package missing, unknown parameter, no API key...
        raise build_error(field, spec, exc) from exc
    if not isinstance(model, BaseChatModel):
        built = type(model).__name__
        raise ConfigError(field, f"{spec.provider}:{spec.model} built a {built}, not a chat model")
    return model
