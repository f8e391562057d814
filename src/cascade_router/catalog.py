"""What is known about a provider's model: price, context window, maximum answer, and whether it
returns token logprobs (whole and streamed), calls tools, follows a JSON schema, continues a
prefilled answer.

Prices and context windows come from the `genai-prices` catalog (MIT, maintained by Pydantic:
https://github.com/pydantic/genai-prices). The capabilities are this project's table below, each
row with the provider documentation it was read from; ``None`` means not known here. A rung's own
settings (``price``, ``context_window``, ``prefill``, ``max_tokens``) override the catalog;
``cascade-router models`` prints it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cascade_router.pricing import catalog_provider


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a model can do, as its provider documents it (None: not known here)."""

    logprobs: bool | None = None
    """Token logprobs on a whole (not streamed) answer, when asked for."""
    streaming_logprobs: bool | None = None
    """Token logprobs in a streamed answer's chunks."""
    tool_calling: bool | None = None
    structured_output: bool | None = None
    """A JSON schema the answer is held to (a response format, or a forced tool call)."""
    prefill: bool | None = None
    """Continues a conversation's final assistant message instead of starting a new answer."""
    max_output_tokens: int | None = None
    """The longest answer the model gives."""
    source: str | None = None
    """Where this row was read from."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model as the catalog knows it."""

    provider: str | None
    model: str
    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    context_window: int | None = None
    capabilities: Capabilities = Capabilities()

    def as_dict(self) -> dict[str, Any]:
        caps = self.capabilities
        return {
            "provider": self.provider,
            "model": self.model,
            "input_per_mtok": self.input_per_mtok,
            "output_per_mtok": self.output_per_mtok,
            "context_window": self.context_window,
            "max_output_tokens": caps.max_output_tokens,
            "logprobs": caps.logprobs,
            "streaming_logprobs": caps.streaming_logprobs,
            "tool_calling": caps.tool_calling,
            "structured_output": caps.structured_output,
            "prefill": caps.prefill,
            "source": caps.source,
        }


_OPENAI_CHAT = "https://platform.openai.com/docs/api-reference/chat/create (logprobs, top_logprobs)"
_OPENAI_REASONING = "https://platform.openai.com/docs/guides/reasoning (unsupported parameters)"
_GPT5 = (
    "https://platform.openai.com/docs/guides/reasoning; no logprobs for gpt-5, 5.1, 5.2: "
    "https://github.com/confident-ai/deepeval/pull/2805, https://github.com/BerriAI/litellm/pull/18856"
)
_ANTHROPIC = "https://docs.anthropic.com/en/api/messages (no logprobs; prefill of the assistant turn)"

# (provider, model pattern, capabilities): the first match wins. Patterns match the start of the
# model's name; a dated snapshot (gpt-4o-2024-08-06) matches its family.
_TABLE: list[tuple[str, re.Pattern[str], Capabilities]] = [
    (p, re.compile(pattern), caps)
    for p, pattern, caps in [
        ("openai", r"o\d", Capabilities(False, False, True, True, False, 100_000, _OPENAI_REASONING)),
        # GPT-5, 5.1 and 5.2 (and their mini, nano, chat variants) return no logprobs on OpenAI's
        # API (read in deepeval's and LiteLLM's model tables, 2026); later 5.x are not known here.
        (
            "openai",
            r"gpt-5(\.[12])?(-(mini|nano|chat|pro|codex))?(-latest|-\d{4}-\d{2}-\d{2})?$",
            Capabilities(False, False, True, True, False, 128_000, _GPT5),
        ),
        ("openai", r"gpt-4o-mini", Capabilities(True, True, True, True, False, 16_384, _OPENAI_CHAT)),
        ("openai", r"gpt-4o", Capabilities(True, True, True, True, False, 16_384, _OPENAI_CHAT)),
        ("openai", r"gpt-4\.1", Capabilities(True, True, True, True, False, 32_768, _OPENAI_CHAT)),
        (
            "openai",
            r"gpt-4-turbo|gpt-4-\d{4}-preview",
            Capabilities(True, True, True, True, False, 4_096, _OPENAI_CHAT),
        ),
        ("openai", r"gpt-4", Capabilities(True, True, True, False, False, 8_192, _OPENAI_CHAT)),
        ("openai", r"gpt-3\.5-turbo", Capabilities(True, True, True, False, False, 4_096, _OPENAI_CHAT)),
        (
            "anthropic",
            r"claude-3-5-haiku|claude-3-5-sonnet",
            Capabilities(False, False, True, True, True, 8_192, _ANTHROPIC),
        ),
        ("anthropic", r"claude-3-7-sonnet", Capabilities(False, False, True, True, True, 64_000, _ANTHROPIC)),
        (
            "anthropic",
            r"claude-(sonnet|haiku)-4",
            Capabilities(False, False, True, True, True, 64_000, _ANTHROPIC),
        ),
        ("anthropic", r"claude-opus-4", Capabilities(False, False, True, True, True, 32_000, _ANTHROPIC)),
        ("anthropic", r"claude", Capabilities(False, False, True, True, True, None, _ANTHROPIC)),
    ]
]


@functools.lru_cache(maxsize=1024)
def capabilities(provider: str | None, model: str) -> Capabilities:
    """The table's row for a model, or an empty one (nothing known). Cached: the cost rules ask
    for a rung's longest answer on every request."""
    p = catalog_provider(provider)
    for row_provider, pattern, caps in _TABLE:
        if (p is None or p == row_provider) and pattern.match(model):
            return caps
    return Capabilities()


def model_info(provider: str | None, model: str, **overrides: Any) -> ModelInfo:
    """What the catalog knows of ``provider:model``; ``overrides`` (``input_per_mtok``,
    ``context_window``, ``prefill``, ``max_output_tokens``...) replace what it says."""
    found = _catalog(provider, model)
    info = found or ModelInfo(provider, model)
    info = replace(info, capabilities=capabilities(provider or info.provider, model))
    fields = {k: v for k, v in overrides.items() if v is not None}
    caps_fields = {k: fields.pop(k) for k in list(fields) if k in Capabilities.__dataclass_fields__}
    if caps_fields:
        info = replace(info, capabilities=replace(info.capabilities, **caps_fields))
    return replace(info, **fields) if fields else info


def _catalog(provider: str | None, model: str) -> ModelInfo | None:
    from genai_prices.data_snapshot import get_snapshot

    try:
        cat_provider, cat_model = get_snapshot().find_provider_model(
            model, None, catalog_provider(provider), None
        )
    except LookupError:
        return None
    return _from_catalog(cat_provider.id, cat_model, model)


def _from_catalog(provider: str, cat_model: Any, name: str) -> ModelInfo:
    prices = cat_model.get_prices(datetime.now(tz=UTC))
    inp, out = getattr(prices, "input_mtok", None), getattr(prices, "output_mtok", None)
    window = cat_model.context_window if isinstance(cat_model.context_window, int) else None
    return ModelInfo(
        provider,
        name,
        float(inp) if isinstance(inp, Decimal) else None,
        float(out) if isinstance(out, Decimal) else None,
        window,
    )


def models(provider: str | None = None, search: str | None = None) -> list[ModelInfo]:
    """Every current model of the catalog (of ``provider``; whose name holds ``search``)."""
    from genai_prices.data_snapshot import get_snapshot

    wanted = catalog_provider(provider)
    found = []
    for cat_provider in get_snapshot().providers:
        if wanted is not None and cat_provider.id != wanted:
            continue
        for cat_model in cat_provider.models:
            if getattr(cat_model, "deprecated", False):
                continue
            if search and search.lower() not in cat_model.id.lower():
                continue
            info = _from_catalog(cat_provider.id, cat_model, cat_model.id)
            found.append(replace(info, capabilities=capabilities(cat_provider.id, cat_model.id)))
    return found
