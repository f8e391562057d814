"""Reading OpenAI-format logprobs, the format ChatOpenAI, vLLM, llama.cpp and Ollama return.

``{"content": [{"token": "Paris", "logprob": -0.01, "top_logprobs": [{"token", "logprob"}]}]}``
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cascade_router.model_io import TokenLogprob, TokenLogprobs


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)


def parse_logprobs(value: Any) -> TokenLogprobs | None:
    """Token logprobs from a ``logprobs`` object, a bare ``content`` list, or None.

    Accepts dicts and the openai SDK's objects alike. Returns None when there are none, so that
    a scorer can say the signal is missing instead of scoring an empty list. The tokens
    themselves are read on first use (``TokenLogprobs``): an answer no scorer reads them from
    costs nothing per token.
    """
    if value is None:
        return None
    content = value if isinstance(value, Sequence) and not isinstance(value, str) else _get(value, "content")
    if content is None:
        return None
    return TokenLogprobs(content, _token)


def _token(item: Any) -> TokenLogprob:
    top = _get(item, "top_logprobs") or ()
    return TokenLogprob(
        token=str(_get(item, "token")),
        logprob=_number(_get(item, "logprob")),
        top=tuple((str(_get(t, "token")), _number(_get(t, "logprob"))) for t in top),
    )


def _number(value: Any) -> float:
    """A logprob as a float; NaN for anything that is not a number (``null`` from some servers).

    Reading never fails: whether the values are usable is the scorer's call (an invalid logprob
    is a missing signal, not a broken answer).
    """
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


TOP_LOGPROBS = 2
"""Alternatives asked per token: the chosen token's logprob and the runner-up's (``margin``)."""


def asking_logprobs(model: Any) -> Any:
    """A copy of an OpenAI-style client model set to return token logprobs, or the model itself.

    Clients with ``logprobs`` and ``top_logprobs`` fields (LangChain's ``ChatOpenAI`` and its
    OpenAI-compatible subclasses, LlamaIndex's ``OpenAI`` / ``OpenAILike``) get ``logprobs=True``
    and at least ``TOP_LOGPROBS`` alternatives: OpenAI returns logprobs on ``logprobs`` alone,
    but llama.cpp's servers compute them only when ``top_logprobs`` is set, and without them a
    logprob scorer escalates every request. The user's object is not changed; other clients are
    returned as they are.
    """
    fields = getattr(type(model), "model_fields", {})
    if "logprobs" not in fields or "top_logprobs" not in fields:
        return model
    update: dict[str, Any] = {}
    if model.logprobs is not True:
        update["logprobs"] = True
    if (model.top_logprobs or 0) < TOP_LOGPROBS:
        update["top_logprobs"] = TOP_LOGPROBS
    return model.model_copy(update=update) if update else model
