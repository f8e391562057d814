"""Answers that are unusable whatever their confidence: empty, refusals, broken structure."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from cascade_router.model_io import ModelOutput, Request
from cascade_router.scorers.base import Score, Scorer, ScoringContext

DEFAULT_REFUSALS = (
    r"^\W*(i'?m|i am) (sorry|afraid),? (but )?i (can(no|')?t|won'?t|am unable|'m unable)",
    r"^\W*i (can(no|')?t|won'?t|am unable to|'m unable to) (help|assist|comply|do that|provide)",
    r"^\W*as an ai( language model)?,? i (can(no|')?t|am unable|don'?t)",
)


EMPTY_ANSWER = "empty answer"
"""The one validity problem that leaves the answer's structure intact."""


def structural_problem(request: Request, output: ModelOutput) -> str | None:
    """Why an answer cannot be used at all, or None.

    Checked on every rung before its scorer (unless the rung turns ``validate`` off): nothing
    a scorer says can make a malformed answer usable.
    """
    if output.parse_error is not None:
        return f"structured output did not parse: {output.parse_error}"
    if output.invalid_tool_calls:
        return f"malformed tool call: {output.invalid_tool_calls[0]}"
    if request.tool_names is not None:
        for call in output.tool_calls:
            if call.name not in request.tool_names:
                return f"tool call names unknown tool {call.name!r}"
    if not output.tool_calls and not output.text.strip():
        return EMPTY_ANSWER
    return None


class ValidityScorer(Scorer):
    """1.0 for a usable answer, 0.0 for an empty one, a refusal, unparseable structured output
    or a malformed tool call. Use it with any threshold in (0, 1]."""

    kind: Literal["validity"] = "validity"
    method: ClassVar[str] = "validity"
    refusal_patterns: tuple[str, ...] = Field(default=DEFAULT_REFUSALS)
    """Case-insensitive regular expressions matched against the start of the answer."""

    @field_validator("refusal_patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        # Checked here: a pattern that does not compile would otherwise fail every request.
        for i, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"refusal_patterns[{i}] {pattern!r} is not a regular expression: {exc}"
                ) from None
        return patterns

    def score(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        problem = structural_problem(request, output)
        if problem is None and not output.tool_calls:
            text = output.text.strip().lower()
            for pattern in self.refusal_patterns:
                if re.search(pattern, text, flags=re.IGNORECASE):
                    problem = "refusal"
                    break
        if problem is not None:
            return Score(0.0, "validity", {"problem": problem})
        return Score(1.0, "validity")
