"""Scripted replies, shared by every fake model (core backend, LangChain, LlamaIndex)."""

from __future__ import annotations

import math
import random
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r"\s*[\w']+|\s*[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    """Word-piece-like tokens with their leading space, as BPE tokenizers produce them."""
    return _TOKEN.findall(text)


def openai_logprobs(
    text: str, confidence: float, *, top: int = 2, seed: int | str = 0, spread: float = 0.05
) -> dict[str, Any]:
    """Realistic OpenAI-format logprobs for ``text`` whose mean token probability is
    ``confidence`` (to within rounding).

    Token probabilities scatter around ``confidence`` by up to ``spread``, deterministically for
    a given ``seed``; each token has ``top`` alternatives sharing the remaining mass.
    """
    if not 0.0 < confidence <= 1.0:
        raise ValueError(f"confidence must be in (0, 1], got {confidence}")
    rng = random.Random(f"{seed}:{text}")
    tokens = tokenize(text) or [""]
    jitter = [rng.uniform(-spread, spread) for _ in tokens]
    centre = sum(jitter) / len(jitter)
    content = []
    for token, j in zip(tokens, jitter, strict=True):
        p = min(1.0, max(1e-6, confidence + j - centre))
        alternatives = []
        rest = 1.0 - p
        for k in range(top):
            share = rest * (0.6 if k < top - 1 else 1.0)
            rest -= share
            if share > 1e-9:
                alt = f"{token}_{k + 1}" if token.strip() else f"{token}x{k + 1}"
                alternatives.append({"token": alt, "logprob": math.log(share), "bytes": list(alt.encode())})
        entry = {"token": token, "logprob": math.log(p), "bytes": list(token.encode())}
        content.append({**entry, "top_logprobs": [dict(entry), *alternatives] if top else []})
    return {"content": content, "refusal": None}


@dataclass(frozen=True)
class Reply:
    """One scripted answer of a fake model.

    Text, tool calls, logprobs and usage are what a real provider would return; ``error``,
    ``delay`` and ``fail_after_chunks`` script the ways real providers fail.
    """

    text: str = ""
    tool_calls: Sequence[Mapping[str, Any]] = ()
    """``{"name": ..., "args": {...}, "id": ...}``; ``id`` is filled in when absent."""
    invalid_tool_calls: Sequence[Mapping[str, Any]] = ()
    """``{"name": ..., "args": "<not json>", "error": ...}``, as LangChain reports them."""
    confidence: float | None = None
    """Synthesise OpenAI-format logprobs with this mean token probability; None: no logprobs."""
    logprobs: Mapping[str, Any] | None = None
    """Explicit OpenAI-format logprobs; overrides ``confidence``."""
    usage: tuple[int, int] | str | None = "auto"
    """(input, output) tokens; ``"auto"`` estimates them (4 characters a token); None reports none."""
    error: BaseException | type[BaseException] | None = None
    """Raised instead of answering."""
    delay: float = 0.0
    """Seconds before answering (before the first chunk when streaming)."""
    chunk_delay: float = 0.0
    """Seconds between two streamed chunks: a provider generating at a finite rate. A whole
    (not streamed) answer takes ``delay`` plus this for every chunk after the first."""
    fail_after_chunks: int | None = None
    """When streaming: raise ``error`` (or a ConnectionError) after this many chunks."""
    model: str | None = None
    """Model name the fake provider reports; defaults to the fake's own."""
    finish_reason: str = "stop"
    extra: dict[str, Any] = field(default_factory=dict)

    def whole_delay(self) -> float:
        """Seconds before a whole (not streamed) answer: the first chunk's wait and the rest's."""
        return self.delay + self.chunk_delay * max(0, len(tokenize(self.text)) - 1)

    def resolved_logprobs(self) -> dict[str, Any] | None:
        if self.logprobs is not None:
            return dict(self.logprobs)
        if self.confidence is not None:
            return openai_logprobs(self.text, self.confidence)
        return None

    def resolved_usage(self, prompt_chars: int) -> tuple[int, int] | None:
        if self.usage is None or isinstance(self.usage, tuple):
            return self.usage
        return max(1, math.ceil(prompt_chars / 4)), max(1, len(tokenize(self.text)))

    def stream_error(self) -> BaseException:
        if self.error is None:
            return ConnectionError("scripted stream interruption")
        return self.error() if isinstance(self.error, type) else self.error

    def raise_error(self) -> None:
        if self.error is not None and self.fail_after_chunks is None:
            raise self.error() if isinstance(self.error, type) else self.error


def as_reply(value: Reply | str | BaseException | type[BaseException] | Mapping[str, Any]) -> Reply:
    """Shorthand: a string is a text answer, an exception an error, a dict a ``Reply``'s fields
    (in a config file, ``error`` may name a built-in exception: ``{error: TimeoutError}``)."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(text=value)
    if isinstance(value, BaseException) or (isinstance(value, type) and issubclass(value, BaseException)):
        return Reply(error=value)
    fields = dict(value)
    error = fields.get("error")
    if isinstance(error, str):
        import builtins

        found = getattr(builtins, error, None)
        if not (isinstance(found, type) and issubclass(found, Exception)):
            raise ValueError(
                f"error: {error!r} is not a built-in exception (ConnectionError, TimeoutError...)"
            )
        fields["error"] = found
    if isinstance(fields.get("usage"), list):
        fields["usage"] = tuple(fields["usage"])
    if isinstance(fields.get("tool_calls"), list):
        fields["tool_calls"] = tuple(fields["tool_calls"])
    return Reply(**fields)


class Script:
    """A thread-safe queue of replies; cycles when ``cycle`` is set, else fails when empty."""

    def __init__(
        self, replies: Sequence[Any], *, cycle: bool = True, fault_rate: float = 0.0, seed: int = 0
    ) -> None:
        """``fault_rate``: the share of calls that fail with a ``ConnectionError`` instead of
        taking the next reply (seeded by ``seed``): an unreliable provider under load."""
        if not replies:
            raise ValueError("a script needs at least one reply")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
        self.replies = [as_reply(r) for r in replies]
        self.cycle = cycle
        self.calls = 0
        self.fault_rate = fault_rate
        self.faults = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Copies and pickles of a fake model (as of a real one) must work: the lock stays behind.
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def next(self) -> Reply:
        with self._lock:
            i = self.calls
            self.calls += 1
            if self.fault_rate and self._rng.random() < self.fault_rate:
                self.faults += 1
                return Reply(error=ConnectionError("scripted fault: the provider dropped the connection"))
        if i >= len(self.replies):
            if not self.cycle:
                raise RuntimeError(f"script exhausted after {len(self.replies)} replies")
            i %= len(self.replies)
        return self.replies[i]
