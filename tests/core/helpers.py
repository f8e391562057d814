"""A scorer that reads the score scripted on each reply, for tests of the policy."""

from __future__ import annotations

from typing import ClassVar, Literal

from cascade_router import ModelOutput, Request, Score, Scorer
from cascade_router.scorers import ScoringContext


class ScriptedScore(Scorer):
    """Returns ``Reply.extra["score"]``: lets a test choose each attempt's score exactly."""

    kind: Literal["scripted"] = "scripted"
    method: ClassVar[str] = "scripted"

    def score(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        return Score(output.raw.extra["score"], "scripted")
