"""What a model call cost, from the `genai-prices` catalog or a price the rung states.

A model the catalog does not know costs ``None`` (unknown), never 0: a cascade whose savings
are computed from made-up zeros would look cheaper than it is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cascade_router.model_io import Usage

# LangChain's `ls_provider` names and a few common spellings, mapped to genai-prices' ids.
_PROVIDER_ALIASES = {
    "google_genai": "google",
    "google_vertexai": "google",
    "google_anthropic_vertex": "google",
    "vertexai": "google",
    "gemini": "google",
    "mistralai": "mistral",
    "amazon_bedrock": "aws",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "azure_openai": "azure",
    "xai": "x-ai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
}


class Price(BaseModel):
    """A model's price in US dollars per million tokens, stated by the user."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    input_per_mtok: float = Field(ge=0)
    """Dollars per million input (prompt) tokens."""
    output_per_mtok: float = Field(ge=0)
    """Dollars per million output (completion) tokens."""

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class _CatalogEntry:
    flat: Price | None
    """Flat per-token prices, the common case, computed here without the catalog's overhead."""
    slow: tuple[Any, Any] | None
    """(provider, model) of the catalog, for tiered prices that depend on the request size."""
    context_window: int | None = None
    """The model's context window in tokens, where the catalog knows it."""


_cache: dict[tuple[str | None, str], _CatalogEntry | None] = {}
_cache_lock = threading.Lock()


def catalog_provider(provider: str | None) -> str | None:
    if provider is None:
        return None
    p = provider.lower()
    return _PROVIDER_ALIASES.get(p, p)


def _lookup(provider: str | None, model: str) -> _CatalogEntry | None:
    key = (provider, model)
    try:
        return _cache[key]
    except KeyError:
        pass
    # Imported here: the catalog is large and most processes price a handful of models.
    from genai_prices.data_snapshot import get_snapshot

    entry: _CatalogEntry | None
    try:
        cat_provider, cat_model = get_snapshot().find_provider_model(
            model, None, catalog_provider(provider), None
        )
    except LookupError:
        entry = None
    else:
        prices = cat_model.get_prices(datetime.now(tz=UTC))
        inp, out = getattr(prices, "input_mtok", None), getattr(prices, "output_mtok", None)
        window = getattr(cat_model, "context_window", None)
        window = window if isinstance(window, int) else None
        if isinstance(inp, Decimal) and isinstance(out, Decimal):
            entry = _CatalogEntry(Price(input_per_mtok=float(inp), output_per_mtok=float(out)), None, window)
        else:
            entry = _CatalogEntry(None, (cat_provider, cat_model), window)
    with _cache_lock:
        _cache[key] = entry
    return entry


def catalog_price(provider: str | None, model: str) -> Price | None:
    """The catalog's flat price for a model, or None when unknown or tiered."""
    entry = _lookup(provider, model)
    return entry.flat if entry is not None else None


def catalog_context_window(provider: str | None, model: str) -> int | None:
    """The catalog's context window for a model (tokens), or None when unknown."""
    entry = _lookup(provider, model)
    return entry.context_window if entry is not None else None


def cost_usd(
    usage: Usage | None, *, provider: str | None, model: str | None, price: Price | None = None
) -> float | None:
    """Dollar cost of one call; None when the usage or the price is unknown."""
    if usage is None:
        return None
    if price is not None:
        return price.cost(usage)
    if model is None:
        return None
    entry = _lookup(provider, model)
    if entry is None:
        return None
    if entry.flat is not None:
        return entry.flat.cost(usage)
    from genai_prices import Usage as CatalogUsage

    assert entry.slow is not None
    cat_provider, cat_model = entry.slow
    calc = cat_model.calc_price(
        CatalogUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        cat_provider,
    )
    return float(calc.total_price)
