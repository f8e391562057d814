"""Self-check: ask a model whether the answer is correct (AutoMix-style verification)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from cascade_router.model_io import Message, ModelOutput, Request, valid_logprob
from cascade_router.pricing import Price
from cascade_router.scorers.base import Score, Scorer, ScoringContext

DEFAULT_INSTRUCTIONS = (
    "You are a strict grader. Read the conversation and the proposed answer to its last "
    "message. Decide whether the proposed answer is correct and complete. Reply with one word: "
    "Yes or No."
)

_YES = frozenset({"yes", "y", "true", "correct"})
_NO = frozenset({"no", "n", "false", "incorrect"})
_LEADING_WORD = re.compile(r"^\W*([a-z]+)", re.IGNORECASE)
_OUT_OF_TEN = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*10\b")
_STATED = re.compile(r"(?:score|confidence|rating)\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


class JudgeScorer(Scorer):
    """Asks a judge model "is this answer correct?" and reads P(yes).

    P(yes) comes from the judge's first-token logprobs when it returns them (ask for
    ``logprobs`` and ``top_logprobs``); otherwise from its text: a leading yes/no, ``7/10`` or
    ``score: 0.7``. An answer it cannot read is a missing signal and escalates, with the judge's
    words in the reason. The judge's tokens and cost count in the attempt.
    """

    kind: Literal["judge"] = "judge"
    method: ClassVar[str] = "judge"
    judge: Any = None
    """The judge model: a chat model object or ``provider:model`` string; None asks the rung's
    own model to check itself."""
    instructions: str = DEFAULT_INSTRUCTIONS
    """System prompt of the judge call."""
    price: Price | None = None
    """The judge's price when the catalog does not know it."""
    max_answer_chars: int = Field(default=8000, gt=0)
    """Longer answers are cut before they are shown to the judge, to bound its cost."""
    max_conversation_chars: int = Field(default=16000, gt=0)
    """Longer conversations are cut before they are shown to the judge, keeping their end (the
    question being answered) and saying how much was left out."""

    def models(self) -> list[Any]:
        return [self.judge] if self.judge is not None else []

    def judge_request(self, request: Request, output: ModelOutput) -> Request:
        transcript = "\n".join(f"[{m.role}] {m.content}" for m in request.messages)
        if len(transcript) > self.max_conversation_chars:
            cut = len(transcript) - self.max_conversation_chars
            transcript = f"[... {cut} earlier characters left out ...]\n" + transcript[cut:]
        answer = output.text[: self.max_answer_chars]
        if output.tool_calls:
            calls = "; ".join(f"{c.name}({json.dumps(dict(c.args))})" for c in output.tool_calls)
            answer = f"{answer}\n[calls tools] {calls}".strip()
        prompt = (
            f"Conversation:\n{transcript}\n\nProposed answer:\n{answer}\n\n"
            "Is the proposed answer correct? Answer Yes or No."
        )
        return Request(messages=[Message("system", self.instructions), Message("user", prompt)])

    def score(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        verdict = ctx.invoke(self.judge, self.judge_request(request, output), price=self.price)
        return read_verdict(verdict)

    async def ascore(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        verdict = await ctx.ainvoke(self.judge, self.judge_request(request, output), price=self.price)
        return read_verdict(verdict)


def read_verdict(verdict: ModelOutput) -> Score:
    """P(yes) from a judge's answer: first-token logprobs if any, else its stated words."""
    details: dict[str, Any] = {"judge_model": verdict.model, "judge_answer": verdict.text[:200]}
    for token in verdict.logprobs or ():
        if not token.token.strip():
            continue
        p_yes = p_no = 0.0
        candidates = token.top or ((token.token, token.logprob),)
        for text, logprob in candidates:
            if not valid_logprob(logprob):
                continue
            word = text.strip().lower()
            if word in _YES:
                p_yes += math.exp(min(logprob, 0.0))
            elif word in _NO:
                p_no += math.exp(min(logprob, 0.0))
        if p_yes + p_no > 0:
            details["source"] = "first_token_logprobs"
            return Score(p_yes / (p_yes + p_no), "judge", details)
        break  # the first real token is neither yes nor no: fall back to the text
    text = verdict.text.strip()
    if match := _LEADING_WORD.match(text):
        word = match.group(1).lower()
        if word in _YES or word in _NO:
            details["source"] = "stated_yes_no"
            return Score(1.0 if word in _YES else 0.0, "judge", details)
    if match := _OUT_OF_TEN.search(text):
        details["source"] = "stated_score"
        return Score(min(1.0, float(match.group(1)) / 10), "judge", details)
    if match := _STATED.search(text):
        value = float(match.group(1))
        if value <= 10:
            details["source"] = "stated_score"
            return Score(value if value <= 1 else value / 10, "judge", details)
    return Score.missing_signal("judge", f"judge output unparseable: {text[:80]!r}", **details)
