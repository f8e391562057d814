"""What a routing rule sees and answers: the request before (and between) its rung calls."""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from cascade_router.model_io import Request

if TYPE_CHECKING:
    from cascade_router.attempts import Attempt
    from cascade_router.ladder import RungRuntime

TOKENS_PER_MESSAGE = 4
"""Tokens a chat format adds per message (role and separators), as OpenAI documents for its
chat models; added to the text's count."""


def count_tokens(text: str) -> int:
    """Tokens of ``text``: OpenAI's cl100k encoding counted offline when ``bpe-openai`` is
    installed (the ``tokens`` extra), else an estimate of one token per 4 characters (OpenAI's
    rule of thumb for English). For other providers' tokenizers cl100k is itself an estimate:
    they differ by some 10-20 % on English text, which ``ContextLengthRule.safety_margin`` covers."""
    encoding = _cl100k()
    if encoding is None:
        return math.ceil(len(text) / 4)
    return len(encoding.encode(text, disallowed_special=()))


@functools.cache
def _cl100k() -> Any:
    with warnings.catch_warnings():
        # bpe-openai reads its data, on import, with importlib.resources' legacy API (deprecated).
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import bpe_openai  # imported on first use: loading the encoding takes a moment
        except ImportError:
            return None
        return bpe_openai.get_encoding("cl100k_base")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """One request's own routing inputs (``invoke(..., max_cost_usd=..., deadline_s=...,
    route_metadata=...)``); None: the rule's default."""

    max_cost_usd: float | None = None
    deadline_s: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


class RouteContext:
    """A request as the routing rules see it; the prompt's text and token count are computed on
    first use, once per request."""

    __slots__ = (
        "_metadata",
        "_text",
        "_tokens",
        "attempts",
        "latencies",
        "limits",
        "memo",
        "request",
        "request_id",
        "rungs",
        "started",
    )

    def __init__(
        self,
        request: Request,
        rungs: Sequence[RungRuntime],
        limits: RequestLimits,
        started: float,
        attempts: Sequence[Attempt] = (),
        *,
        latencies: RungLatencies | None = None,
        request_id: str | None = None,
    ) -> None:
        self.request = request
        self.request_id = request_id
        """The request's id (as in the decision log and ``record_feedback``)."""
        self.latencies = latencies
        """The ladder's recent latencies per rung (for deadlines)."""
        self.rungs = rungs
        self.limits = limits
        self.started = started
        """``time.perf_counter()`` when the request started (for deadlines)."""
        self.attempts = attempts
        """The request's attempts so far (what has been spent)."""
        self.memo: dict[int, Any] = {}
        """What a rule worked out about this request, by ``id(rule)`` (a classifier's verdict
        is asked once, not once per rung)."""
        self._text: str | None = None
        self._tokens: int | None = None
        self._metadata: Mapping[str, Any] | None = None

    @property
    def text(self) -> str:
        """Every message's text, joined: what keyword and pattern rules read."""
        if self._text is None:
            self._text = "\n".join(m.content for m in self.request.messages)
        return self._text

    @property
    def prompt_tokens(self) -> int:
        """The prompt's size in tokens (``count_tokens`` plus the chat format's overhead)."""
        if self._tokens is None:
            messages = self.request.messages
            self._tokens = count_tokens(self.text) + TOKENS_PER_MESSAGE * len(messages)
        return self._tokens

    @property
    def prompt_tokens_at_most(self) -> int:
        """An upper bound on ``prompt_tokens`` that costs no tokenizing: a token is at least a
        byte of UTF-8 in cl100k, so the text's bytes (with the format's overhead) bound it."""
        return len(self.text.encode()) + TOKENS_PER_MESSAGE * len(self.request.messages)

    def prompt_tokens_bound(self, exact_above: int = 256) -> int:
        """The prompt's tokens for a worst case: a short prompt's ``prompt_tokens_at_most`` (a
        few tokens more, nothing counted), a longer one's exact count."""
        at_most = self.prompt_tokens_at_most
        return at_most if at_most <= exact_above else self.prompt_tokens

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The request's metadata, with this call's ``route_metadata`` over it."""
        if self._metadata is None:
            own, given = self.request.metadata, self.limits.metadata
            self._metadata = {**own, **given} if own and given else (given or own)
        return self._metadata

    def spent_usd(self) -> float:
        """What the attempts so far cost (those whose cost is unknown count as 0: a lower bound)."""
        return sum(a.cost_usd or 0.0 for a in self.attempts) + sum(
            a.scorer_cost_usd or 0.0 for a in self.attempts
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class RoutingRule(BaseModel):
    """Base of routing rules. Subclass it, set ``kind``, and implement what applies:
    ``refusal`` (once, before any rung), ``skip`` (before each rung is called), ``learn`` (after a
    rung's error), ``finish`` (after the request), ``feedback`` (a label for its answer). Rules
    are pure functions of what they are given, apart from what they learn;
    they must be cheap (they run on every request)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, use_attribute_docstrings=True
    )

    kind: str = "rule"
    """What the rule is (``context_length``, ``domain``, ...): how configuration names it."""

    # A rule's private state (locks, an open store, what it learned) belongs to one process and
    # one ladder: copies and pickles of a model (LangChain and LlamaIndex copy them) get a fresh
    # rule from the same fields.
    def __getstate__(self) -> dict[Any, Any]:
        state = dict(super().__getstate__())
        state["__pydantic_private__"] = None
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        fresh = type(self).model_validate(dict(self.__dict__))
        object.__setattr__(self, "__pydantic_private__", fresh.__pydantic_private__)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        return type(self).model_validate(dict(self.__dict__))

    def check_rungs(self, names: Sequence[str], field: str) -> None:
        """Raise ``ConfigError`` (naming ``field``) when the rule names a rung the ladder lacks."""
        return

    def refusal(self, ctx: RouteContext) -> str | None:
        """Why the request must not be answered at all; None: it may be."""
        return None

    def skip(self, ctx: RouteContext, rung: RungRuntime) -> str | None:
        """Why ``rung`` must not be called for this request; None: it may be."""
        return None

    def learn(self, ctx: RouteContext, rung: RungRuntime, error_class: str | None) -> None:
        """A call of ``rung`` failed with ``error_class`` (``cascade_router.failures``)."""
        return

    def timeout(self, ctx: RouteContext) -> float | None:
        """The most a rung called now may take (a deadline's remainder); None: no bound."""
        return None

    def finish(self, ctx: RouteContext) -> None:
        """The request is over (``ctx.attempts`` holds all its attempts): settle what was held."""
        return

    def feedback(self, request_id: str, good: bool, rung: int | None = None) -> None:
        """A label arrived for a finished request's answer (``record_feedback``); ``rung``: the
        label is for that rung's answer (a shadow comparison), None: for the answer returned."""
        return

    @property
    def uses_latencies(self) -> bool:
        """Whether ``skip`` or ``timeout`` reads ``ctx.latencies`` (the engine records them then)."""
        return False

    @property
    def reserves(self) -> bool:
        """Whether ``skip`` holds something for a rung it lets through (a budget): such rules
        are asked after every other rule has let the rung through."""
        return False


class RungLatencies:
    """Each rung's recent latencies in this process, for estimates (deadlines, hedge delays).

    The sorted window is kept between calls and sorted again only after ``resort_every`` new
    latencies: an estimate a few answers old is as good, and a sort per request is not free."""

    def __init__(self, n_rungs: int, window: int = 200, resort_every: int = 8) -> None:
        self.window = window
        self._seen: list[deque[float]] = [deque(maxlen=window) for _ in range(n_rungs)]
        self._sorted: list[list[float]] = [[] for _ in range(n_rungs)]
        self._fresh = [0] * n_rungs
        self._unshared: list[list[float]] = [[] for _ in range(n_rungs)]
        self._resort_every = resort_every
        self._lock = threading.Lock()
        _fork_safe.add(self)

    def observe(self, rung: int, seconds: float) -> None:
        with self._lock:
            self._seen[rung].append(seconds)
            self._fresh[rung] += 1
            if len(self._unshared[rung]) < self.window:
                self._unshared[rung].append(seconds)

    def share(self, push: Callable[[int, list[float]], list[float]]) -> None:
        """Pool this window with other processes': ``push(rung, new latencies)`` sends what this
        process observed since the last call to a shared store and returns the pooled window,
        which replaces this one (the server does this every second over Redis)."""
        with self._lock:
            unshared, self._unshared = self._unshared, [[] for _ in self._unshared]
        for rung, new in enumerate(unshared):
            pooled = push(rung, new)
            with self._lock:
                # What was observed while the store answered is kept for the next round.
                seen = self._seen[rung]
                seen.clear()
                seen.extend(pooled)
                seen.extend(self._unshared[rung])
                self._fresh[rung] = max(self._fresh[rung], self._resort_every)  # sort it again

    def quantile(self, rung: int, q: float, min_samples: int = 1) -> tuple[float, int] | None:
        """(the ``q`` quantile of the rung's recent latencies, how many); None: too few."""
        with self._lock:
            fresh = self._fresh[rung]
            if fresh and (fresh >= self._resort_every or len(self._sorted[rung]) < min_samples):
                self._sorted[rung] = sorted(self._seen[rung])
                self._fresh[rung] = 0
            seen = self._sorted[rung]
        if len(seen) < min_samples or not seen:
            return None
        pos = q * (len(seen) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(seen) - 1)
        return seen[lo] + (seen[hi] - seen[lo]) * (pos - lo), len(seen)

    def after_fork(self) -> None:
        self._lock = threading.Lock()


_fork_safe: weakref.WeakSet[Any] = weakref.WeakSet()
"""Objects with a lock that a ``fork()`` may copy while another thread holds it."""


def _after_fork_in_child() -> None:
    for item in list(_fork_safe):
        item.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
