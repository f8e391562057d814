"""Exceptions raised by cascade_router.

```
CascadeError
├── ConfigError (ValueError)          a ladder or rung that cannot work, named by its field
├── ScorerError                       a scorer raised or returned no usable number; the rung escalates
├── RungTimeoutError (TimeoutError)   a rung took longer than its timeout (whole answer, first token,
│                                     or a stalled stream); the ladder falls back
├── CircuitOpenError                  stands for a rung skipped because its circuit breaker is open
├── RejectedAnswer                    stands for a low-confidence answer inside CascadeExhaustedError
├── RungFailure                       stands in for a rung's error that cannot cross a process boundary
├── CascadeStreamError                a stream failed after output had reached the caller
└── CascadeExhaustedError (ExceptionGroup)
                                      no rung produced an acceptable answer; holds one error per attempt
```

Every one of them survives ``pickle`` (a ``ProcessPoolExecutor`` worker raising one must not
break the pool), with its fields.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from cascade_router.attempts import Attempt


class CascadeError(Exception):
    """Base of every exception that cascade_router raises itself."""


class ConfigError(CascadeError, ValueError):
    """A ladder or rung is configured so that it cannot work.

    The message starts with the path of the offending field (``rungs[1].threshold``), so the
    user knows what to change without reading a traceback.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.field, self.problem))


class ScorerError(CascadeError):
    """A scorer raised, or returned something that is not a number in [0, 1].

    The engine records it on the attempt and escalates: a broken confidence signal must never
    be mistaken for a confident one.
    """


class RungTimeoutError(CascadeError, TimeoutError):
    """A rung did not answer within its ``timeout``."""

    def __init__(self, rung: str, timeout: float, what: str = "answer") -> None:
        self.rung = rung
        self.timeout = timeout
        self.what = what
        """``answer`` (the whole call), ``first token`` or ``next chunk`` (a stalled stream)."""
        super().__init__(f"rung {rung!r} gave no {what} within {timeout:g} s")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.rung, self.timeout, self.what))


class RoutedAroundError(CascadeError):
    """A rung was skipped, not called: a routing rule ruled it out for this request
    (``cascade_router.routing``). Stands for the skipped attempt inside ``CascadeExhaustedError``."""

    def __init__(self, rung: str, rule: str, reason: str) -> None:
        self.rung = rung
        self.rule = rule
        self.reason = reason
        super().__init__(f"rung {rung!r} skipped by the {rule} rule: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.rung, self.rule, self.reason))


class RequestRefusedError(CascadeError):
    """A routing rule refused the request before any rung was called (a domain or safety rule
    with ``refuse``); the message is the rule's."""

    def __init__(self, rule: str, reason: str) -> None:
        self.rule = rule
        self.reason = reason
        super().__init__(f"refused by the {rule} rule: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.rule, self.reason))


class BudgetExceededError(CascadeError):
    """A budget (``{kind: budget, over: raise}``) cannot cover the next rung's worst-case cost:
    the request ends here, before the call."""

    def __init__(self, budget: str, reason: str) -> None:
        self.budget = budget
        self.reason = reason
        super().__init__(f"budget {budget} exceeded: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.budget, self.reason))


class CircuitOpenError(CascadeError):
    """A rung was skipped, not called: its circuit breaker is open (``cascade_router.circuit``).

    Not raised on its own; it stands for the skipped attempt inside ``CascadeExhaustedError``.
    """

    def __init__(self, rung: str, key: str) -> None:
        self.rung = rung
        self.key = key
        super().__init__(f"rung {rung!r} skipped: its circuit breaker is open ({key})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.rung, self.key))


class RungFailure(CascadeError):
    """A rung's error as text, where the original exception cannot be pickled (many provider
    SDK errors hold an HTTP response): what ``CascadeExhaustedError`` carries across processes."""


class RejectedAnswer(CascadeError):
    """A rung answered, but its answer was not accepted (low score, invalid, missing signal).

    It is not raised on its own; it stands for that attempt inside ``CascadeExhaustedError``,
    whose members must all be exceptions.
    """


class CascadeStreamError(CascadeError):
    """A stream failed after part of the answer had already reached the caller.

    The cascade cannot fall back at that point without the caller seeing two answers spliced
    together, so it stops with this error instead of ending the stream silently.
    """

    def __init__(self, message: str, *, attempts: Sequence[Attempt] = ()) -> None:
        super().__init__(message)
        self.attempts = list(attempts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_stream_error, (str(self), portable_attempts(self.attempts)))


def _rebuild_stream_error(message: str, attempts: list[Attempt]) -> CascadeStreamError:
    return CascadeStreamError(message, attempts=attempts)


def portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickle, else a ``RungFailure`` with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RungFailure(f"{type(exc).__name__}: {exc}")
    return exc


def portable_attempts(attempts: Sequence[Attempt]) -> list[Attempt]:
    """Attempt records that can cross a process boundary: the answers' framework objects and
    the exceptions stay behind (the records keep their text, scores and costs)."""
    return [
        replace(
            a,
            output=None,
            exception=None,
            evidence=replace(a.evidence, error=RungFailure(a.error or "error"))
            if a.evidence.error is not None
            else a.evidence,
        )
        for a in attempts
    ]


class CascadeExhaustedError(ExceptionGroup[Exception], CascadeError):
    """Every rung was tried and none gave an acceptable answer.

    One exception per attempt: the rung's own error, or a ``RejectedAnswer`` for an answer that
    was scored too low. ``attempts`` holds the full records (scores, costs, latencies).
    """

    attempts: list[Attempt]

    def __new__(cls, message: str, exceptions: Sequence[Exception], attempts: Sequence[Attempt] = ()) -> Self:
        self = super().__new__(cls, message, exceptions)
        self.attempts = list(attempts)
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], attempts: Sequence[Attempt] = ()
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> CascadeExhaustedError:  # type: ignore[override]
        # Keep the class and the attempt records when `except*` splits the group.
        return CascadeExhaustedError(self.message, excs, self.attempts)

    def __reduce__(self) -> tuple[Any, ...]:
        exceptions = [portable(e) for e in self.exceptions]
        return (self.__class__, (self.message, exceptions, portable_attempts(self.attempts)))
