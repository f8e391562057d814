"""Turning what the user wrote in ``model`` (an object or a ``provider:model`` string) into a
LangChain chat model, with errors that name the field."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel

from cascade_router.errors import ConfigError


def resolve_chat_model(value: Any, field: str) -> BaseChatModel:
    if isinstance(value, BaseChatModel):
        return value
    if isinstance(value, str):
        from langchain.chat_models import init_chat_model

        try:
            return init_chat_model(value)
        except Exception as exc:  # provider package missing, unknown provider, no API key...
            raise ConfigError(field, f"cannot resolve model {value!r}: {type(exc).__name__}: {exc}") from exc
    raise ConfigError(
        field,
        f"expected a LangChain chat model (BaseChatModel) or a 'provider:model' string, "
        f"got {type(value).__name__}",
    )
