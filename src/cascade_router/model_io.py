"""What goes into a model and what the cascade reads out of its answer, framework-neutral.

Adapters convert their framework's objects into these once per call; scorers and the policy
see nothing else. The framework's own objects ride along in ``native`` / ``raw`` so that the
adapter can hand the user exactly what their model returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, overload


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation as plain text, for judges and learned scorers."""

    role: str
    """``system``, ``user``, ``assistant`` or ``tool``."""
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one model call."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability and, when returned, the top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    """``(token, logprob)`` of the most likely alternatives at this position, most likely first."""

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    @property
    def valid(self) -> bool:
        """A log-probability that can be one: not NaN, not positive (beyond rounding)."""
        return valid_logprob(self.logprob)


LOGPROB_ROUNDING = 1e-6
"""Servers round: a logprob up to this far above 0 is read as 0 (probability 1)."""


def valid_logprob(value: float) -> bool:
    return not math.isnan(value) and value <= LOGPROB_ROUNDING


class TokenLogprobs(Sequence[TokenLogprob]):
    """An answer's token logprobs, read from the provider's objects on first use.

    Most answers are never scored by their logprobs (a judge or a validity check decides, or
    the rung is the last one), and reading them costs microseconds per token: a 500-token
    answer would pay milliseconds for nothing. The provider's per-token items are kept (a
    shallow copy, so a later change to the provider's list does not change the answer) and
    parsed, all at once, by the first scorer that reads them. Equal to any sequence of the same
    ``TokenLogprob`` values, a tuple included.
    """

    __slots__ = ("_items", "_parse", "_tokens")

    def __init__(self, items: Sequence[Any], parse: Callable[[Any], TokenLogprob | None]) -> None:
        """``parse`` turns one provider item into a token (None skips the item)."""
        self._items = tuple(items)
        self._parse = parse
        self._tokens: tuple[TokenLogprob, ...] | None = None

    @property
    def tokens(self) -> tuple[TokenLogprob, ...]:
        """Every token, parsed (on the first call)."""
        tokens = self._tokens
        if tokens is None:
            # Two threads may both parse; they make equal tuples, and either may be kept.
            tokens = self._tokens = tuple(t for t in map(self._parse, self._items) if t is not None)
        return tokens

    def __len__(self) -> int:
        return len(self.tokens)

    @overload
    def __getitem__(self, index: int) -> TokenLogprob: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[TokenLogprob, ...]: ...
    def __getitem__(self, index: int | slice) -> TokenLogprob | tuple[TokenLogprob, ...]:
        return self.tokens[index]

    def __iter__(self) -> Iterator[TokenLogprob]:
        return iter(self.tokens)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TokenLogprobs):
            return self.tokens == other.tokens
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self.tokens == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled parsed: the provider's objects may not pickle, and need not travel.
        return (_parsed_logprobs, (self.tokens,))

    def __repr__(self) -> str:
        if self._tokens is None:
            return f"TokenLogprobs(<{len(self._items)} items, not read yet>)"
        return f"TokenLogprobs({self._tokens!r})"


def _parsed_logprobs(tokens: tuple[TokenLogprob, ...]) -> TokenLogprobs:
    return TokenLogprobs(tokens, _itself)


def _itself(token: TokenLogprob) -> TokenLogprob:
    return token


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A well-formed tool call: a name and a JSON object of arguments."""

    name: str
    args: Mapping[str, Any]
    id: str | None = None


class Request:
    """One request to the ladder.

    ``native`` is the framework's own request (a list of LangChain messages, say) and is what
    rung backends send. ``messages`` is the plain-text view that judges and learned scorers
    read; it is built on first use only, because most requests are never judged.
    """

    __slots__ = (
        "__dict__",
        "_to_messages",
        "keep_unparsed",
        "metadata",
        "native",
        "structured",
        "tool_names",
    )

    def __init__(
        self,
        native: Any = None,
        *,
        messages: Sequence[Message] | None = None,
        to_messages: Callable[[Any], Sequence[Message]] | None = None,
        tool_names: frozenset[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        structured: bool = False,
        keep_unparsed: bool = False,
    ) -> None:
        if messages is None and to_messages is None:
            raise TypeError("Request needs `messages` or a `to_messages` converter")
        self.native = native
        self.tool_names = tool_names
        """Names of the tools bound for this request; None when no tools are bound."""
        self.metadata: Mapping[str, Any] = metadata or {}
        """Caller's tags, e.g. ``item_id`` for requests replayed from a dataset."""
        self.structured = structured
        """The caller asked for structured output (``with_structured_output``,
        ``structured_predict``): an answer that is a tool call carrying it is scored by the
        rung's scorer like any answer, not accepted by the ``on_tool_call`` rule, which is for
        an agent's own tool calls."""
        self.keep_unparsed = keep_unparsed
        """The caller wants an answer that does not parse, to see why (``include_raw=True``): the
        final rung's such answer is returned instead of failing the request."""
        self._to_messages = to_messages
        if messages is not None:
            self.__dict__["messages"] = tuple(messages)

    @cached_property
    def messages(self) -> tuple[Message, ...]:
        assert self._to_messages is not None
        return tuple(self._to_messages(self.native))

    def has_turn(self) -> bool:
        """Whether there is anything to answer: a message that is not a system prompt.

        Reads the framework's messages directly where it can (their ``type`` or ``role``), so
        that the plain-text view is not built just for this check.
        """
        native = self.native
        own = getattr(native, "has_turn", None)
        if callable(own):  # a native request that can tell by itself (``ChatBody``)
            return bool(own())
        if "messages" in self.__dict__ or not isinstance(native, Sequence) or isinstance(native, str):
            return any(m.role != "system" for m in self.messages)
        for message in native:
            role = getattr(message, "type", None) or getattr(message, "role", None)
            if role is None:  # a shape we do not know: ask the converter
                return any(m.role != "system" for m in self.messages)
            if str(getattr(role, "value", role)) != "system":
                return True
        return False

    @classmethod
    def from_text(cls, prompt: str, *, system: str | None = None) -> Request:
        """A single-turn request, optionally with a system prompt."""
        turns = [Message("system", system)] if system else []
        turns.append(Message("user", prompt))
        return cls(messages=turns)

    def __repr__(self) -> str:
        return f"Request(native={self.native!r})"


@dataclass(slots=True)
class ModelOutput:
    """The signals the cascade reads from one model answer."""

    text: str
    """The answer's text content ('' for a pure tool call)."""
    raw: Any = None
    """The framework's own response object, returned to the user when this answer is accepted."""
    logprobs: Sequence[TokenLogprob] | None = None
    """Per-token log-probabilities; None when the provider returned none (not the same as empty).
    A tuple, or a ``TokenLogprobs`` that reads the provider's objects on first use."""
    tool_calls: tuple[ToolCall, ...] = ()
    invalid_tool_calls: tuple[str, ...] = ()
    """One description per tool call that could not be parsed (bad JSON arguments, no name)."""
    usage: Usage | None = None
    """Token counts as reported by the provider; None when it reported none."""
    model: str | None = None
    """The model name the provider says answered (may differ from the requested one)."""
    finish_reason: str | None = None
    response_id: str | None = None
    """The provider's id of this response (``chatcmpl-...``), when it gave one."""
    parse_error: str | None = None
    """Set by structured-output adapters when the answer failed to parse or validate."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Adapter-specific values (e.g. a parsed structured object) that scorers may read."""
