"""Exceptions raised by cascade_router.

```
CascadeError
├── ConfigError (ValueError)          a ladder or rung that cannot work, named by its field
├── ScorerError                       a scorer raised or returned no usable number; the rung escalates
├── RungTimeoutError (TimeoutError)   a rung took longer than its timeout; the ladder falls back
├── RejectedAnswer                    stands for a low-confidence answer inside CascadeExhaustedError
├── CascadeStreamError                a stream failed after output had reached the caller
└── CascadeExhaustedError (ExceptionGroup)
                                      no rung produced an acceptable answer; holds one error per attempt
```
"""

from __future__ import annotations

from collections.abc import Sequence
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


class ScorerError(CascadeError):
    """A scorer raised, or returned something that is not a number in [0, 1].

    The engine records it on the attempt and escalates: a broken confidence signal must never
    be mistaken for a confident one.
    """


class RungTimeoutError(CascadeError, TimeoutError):
    """A rung did not answer within its ``timeout``."""

    def __init__(self, rung: str, timeout: float) -> None:
        self.rung = rung
        self.timeout = timeout
        super().__init__(f"rung {rung!r} gave no answer within {timeout:g} s")


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
        return (self.__class__, (self.message, list(self.exceptions), self.attempts))
