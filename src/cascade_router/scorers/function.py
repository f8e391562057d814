"""Any user function as a scorer, and a scorer that falls through a list until one has a signal."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from cascade_router.errors import ScorerError
from cascade_router.model_io import ModelOutput, Request
from cascade_router.scorers.base import Score, Scorer, ScoringContext, as_probability
from cascade_router.timeouts import in_own_thread

ScoreFn = Callable[[Any, Any], "float | Score | Awaitable[float | Score]"]


class CallableScorer(Scorer):
    """Wraps ``fn(messages, answer) -> float in [0, 1]`` (or a ``Score``), sync or async.

    ``messages`` and ``answer`` are the framework's own objects: with LangChain, the list of
    ``BaseMessage`` sent and the ``AIMessage`` returned.
    """

    kind: Literal["callable"] = "callable"
    method: ClassVar[str] = "callable"
    fn: ScoreFn
    """The function; may be ``async def``."""
    inline: bool = False
    """In async requests, call a sync ``fn`` on the event loop's own thread. Only for fast,
    CPU-only functions: by default a sync function runs on a thread of its own there, so that a
    slow one (a blocking HTTP call, a model on the CPU) never stalls the loop's other requests
    and the rung's ``timeout`` can cut it off."""

    def _args(self, request: Request, output: ModelOutput) -> tuple[Any, Any]:
        messages = request.native if request.native is not None else request.messages
        return messages, output.raw if output.raw is not None else output.text

    def score(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        value = self.fn(*self._args(request, output))
        if inspect.isawaitable(value):
            value = _run_coroutine(value)
        return _as_score(value)

    async def ascore(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        args = self._args(request, output)
        if self.inline or _is_async(self.fn):
            value = self.fn(*args)
        else:
            value = await in_own_thread(partial(self.fn, *args), name="callable scorer")
        if inspect.isawaitable(value):
            value = await value
        return _as_score(value)


def _is_async(fn: Any) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _as_score(value: object) -> Score:
    if isinstance(value, Score):
        return value
    number = as_probability(value)
    if number is None:
        raise ScorerError(f"callable scorer returned {value!r:.80}, not a number in [0, 1]")
    return Score(number, "callable")


def _run_coroutine(awaitable: Awaitable[Any]) -> Any:
    """Run an async scorer from sync code, even when an event loop is already running here."""

    async def wrapper() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wrapper())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wrapper()).result()


class FirstAvailableScorer(Scorer):
    """Tries its scorers in order and returns the first score that has a value.

    The usual use: logprobs where the provider returns them, a judge where it does not.
    """

    kind: Literal["first_available"] = "first_available"
    method: ClassVar[str] = "first_available"
    scorers: list[Scorer] = Field(min_length=1)
    """Tried in this order; dicts are read as in a rung's ``scorer``."""

    @field_validator("scorers", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        from cascade_router.scorers import parse_scorer

        if isinstance(value, list | tuple):
            return [parse_scorer(v, field=f"scorers[{i}]") for i, v in enumerate(value)]
        return value

    def models(self) -> list[Any]:
        return [m for scorer in self.scorers for m in scorer.models()]

    def needs_logprobs(self) -> bool:
        return all(scorer.needs_logprobs() for scorer in self.scorers)

    def score(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        reasons = []
        for scorer in self.scorers:
            result = scorer.score(request, output, ctx)
            if result.value is not None:
                return result
            reasons.append(result.missing or "no value")
        return Score.missing_signal("first_available", "; ".join(reasons))

    async def ascore(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        reasons = []
        for scorer in self.scorers:
            result = await scorer.ascore(request, output, ctx)
            if result.value is not None:
                return result
            reasons.append(result.missing or "no value")
        return Score.missing_signal("first_available", "; ".join(reasons))
