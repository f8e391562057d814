"""Labelling recorded answers: each answer's ``quality``, by reference, by a judge, or by agreement.

- ``reference:METHOD`` compares the answer with the item's reference: ``exact``, ``normalized``
  (case, punctuation, articles and spacing ignored, as SQuAD grades), ``last-number`` (the
  answer's last number equals the reference's number, as GSM8K is graded), ``regex`` (the
  pattern's first group, or whole match, normalized, equals the reference normalized),
  ``choice`` (the multiple-choice letter the answer settles on equals the reference letter) and
  ``f1`` (token F1 against the reference: a graded quality in [0, 1]).
- ``judge``: a grading model reads the question and the answer. ``score`` asks for a 1-10 score
  (``JUDGE_SCORE_RUBRIC``); ``pairwise`` asks whether the answer is at least as good as the last
  rung's, twice, with the two answers in both orders, so that a judge that prefers whichever
  answer comes first cannot decide alone: both orders agree → 1 or 0, they disagree → 0.5
  (``JUDGE_PAIRWISE_RUBRIC``). A reply the labeller cannot read leaves the answer unlabelled
  and is counted; it is never guessed.
- ``agreement:METHOD``: 1 when the answer's final answer (under a normalizer: ``last-number``,
  ``normalized``, ``exact``, ``choice``) equals the last rung's, else 0; ``agreement:judge`` asks
  a judge whether the two give the same final answer (``JUDGE_EQUIVALENCE_RUBRIC``). It needs no reference
  and no judge: the label-free proxy for "escalating would not have changed the answer".
"""

from __future__ import annotations

import asyncio
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cascade_router.backend import Backend
from cascade_router.errors import ConfigError
from cascade_router.model_io import Message, ModelOutput, Request
from cascade_router.pricing import cost_usd

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CHOICE = (
    re.compile(r"answer\s*(?:is|:)?\s*\(?([A-J])\)?(?![a-z])", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-J])[).:](?:\s|$)"),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"^\s*([A-J])\s*$"),
)


def normalized(text: str) -> str:
    """Lowercase, without punctuation, articles and extra spaces (SQuAD's normalization)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def last_number(text: str) -> float | None:
    """The last number in the text (commas as thousands separators), or None."""
    numbers = _NUMBER.findall(text)
    for raw in reversed(numbers):
        try:
            return float(raw.replace(",", ""))
        except ValueError:
            continue
    return None


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter an answer settles on: "The answer is (C)", "C.", "(C)"..."""
    for pattern in _CHOICE:
        found = pattern.findall(text)
        if found:
            return str(found[-1]).upper()
    return None


def token_f1(answer: str, reference: str) -> float:
    """Token-level F1 of the normalized texts (SQuAD's)."""
    a, r = normalized(answer).split(), normalized(reference).split()
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


Normalizer = Callable[[str], object]


def normalizer(method: str, pattern: str | None = None) -> Normalizer:
    """The final answer a text states, under a normalizer; None when it states none."""
    if method == "exact":
        return lambda text: text.strip()
    if method == "normalized":
        return normalized
    if method == "last-number":
        return last_number
    if method == "choice":
        return choice_letter
    if method == "regex":
        if pattern is None:
            raise ConfigError("--pattern", "the regex method needs --pattern")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError("--pattern", f"{pattern!r} is not a valid regular expression: {exc}") from None

        def extract(text: str) -> str | None:
            found = compiled.search(text)
            if found is None:
                return None
            return normalized(found.group(1) if compiled.groups else found.group(0))

        return extract
    raise ConfigError(
        "--by", f"unknown method {method!r}; known: exact, normalized, last-number, regex, choice"
    )


REFERENCE_METHODS = ("exact", "normalized", "last-number", "regex", "choice", "f1")
AGREEMENT_METHODS = ("exact", "normalized", "last-number", "regex", "choice")


def by_reference(
    answer: str, reference: str, method: str, pattern: str | None = None
) -> tuple[float, dict[str, Any]]:
    """An answer's quality against the reference, and what was compared."""
    if method == "f1":
        return token_f1(answer, reference), {}
    got: object
    want: object
    if method == "regex":
        got = normalizer("regex", pattern)(answer)
        want = normalized(reference)
    else:
        norm = normalizer(method, pattern)
        got, want = norm(answer), norm(reference)
        if method == "last-number" and want is None:
            raise ConfigError("reference", f"{reference!r} holds no number for last-number")
    return float(got is not None and got == want), {"answer": got, "reference": want}


# -- judges -------------------------------------------------------------------------------------


JUDGE_SCORE_RUBRIC = (
    "You grade answers. Read the question and the answer. Judge correctness first, then "
    "completeness and clarity. Give a score from 1 to 10: 10 fully correct and complete; 7-9 "
    "correct with minor gaps; 4-6 partly correct; 1-3 wrong, irrelevant or a refusal. Reply with "
    "one line: Score: N"
)
"""The system prompt of ``judge`` labelling in ``score`` mode."""

JUDGE_PAIRWISE_RUBRIC = (
    "You compare two answers to the same question. Judge correctness first, then completeness. "
    "Reply with one line: Better: A, Better: B, or Better: tie"
)
"""The system prompt of ``judge`` labelling in ``pairwise`` mode."""

JUDGE_EQUIVALENCE_RUBRIC = (
    "You compare two answers to the same question. Decide whether they give the same final answer "
    "(wording, length and explanation do not matter; the conclusion does). Reply with one word: "
    "Yes or No."
)
"""The system prompt of ``agreement:judge`` labelling."""

_SCORE = re.compile(r"score\s*[:=]?\s*(10|[1-9])(?:\s*/\s*10)?\b", re.IGNORECASE)
_OUT_OF_TEN = re.compile(r"\b(10|[1-9])\s*/\s*10\b")
_BETTER = re.compile(r"better\s*[:=]?\s*(a|b|tie)\b", re.IGNORECASE)


def read_score(reply: str) -> float | None:
    """A 1-10 score from a judge's reply ("Score: 8", "8/10"), or None when it states none."""
    found = _SCORE.search(reply) or _OUT_OF_TEN.search(reply)
    if found is None:
        stripped = reply.strip()
        if stripped.isdigit() and 1 <= int(stripped) <= 10:
            return float(stripped)
        return None
    return float(found.group(1))


def read_better(reply: str) -> str | None:
    """ "a", "b" or "tie" from a pairwise judge's reply, or None."""
    found = _BETTER.search(reply)
    return found.group(1).lower() if found else None


_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def read_yes_no(reply: str) -> bool | None:
    """A leading Yes or No, or None."""
    found = _YES_NO.search(reply)
    return None if found is None else found.group(1).lower() == "yes"


def _transcript(messages: Sequence[Message], limit: int = 16000) -> str:
    text = "\n".join(f"[{m.role}] {m.content}" for m in messages)
    return (
        text if len(text) <= limit else f"[... {len(text) - limit} characters left out ...]\n{text[-limit:]}"
    )


def score_request(question: Sequence[Message], answer: str) -> Request:
    prompt = f"Question:\n{_transcript(question)}\n\nAnswer:\n{answer[:8000]}\n\nScore the answer."
    return Request(messages=[Message("system", JUDGE_SCORE_RUBRIC), Message("user", prompt)])


def equivalence_request(question: Sequence[Message], first: str, second: str) -> Request:
    prompt = (
        f"Question:\n{_transcript(question)}\n\nAnswer 1:\n{first[:8000]}\n\nAnswer 2:\n{second[:8000]}"
        "\n\nDo they give the same final answer?"
    )
    return Request(messages=[Message("system", JUDGE_EQUIVALENCE_RUBRIC), Message("user", prompt)])


def pairwise_request(question: Sequence[Message], first: str, second: str) -> Request:
    prompt = (
        f"Question:\n{_transcript(question)}\n\nAnswer A:\n{first[:8000]}\n\nAnswer B:\n{second[:8000]}"
        "\n\nWhich answer is better?"
    )
    return Request(messages=[Message("system", JUDGE_PAIRWISE_RUBRIC), Message("user", prompt)])


# -- labelling a dataset -------------------------------------------------------------------------


@dataclass
class LabelStats:
    labelled: int = 0
    kept: int = 0
    """Answers that already had a quality (kept without --relabel)."""
    unreadable: int = 0
    """Judge replies that stated no label: those answers stay unlabelled."""
    no_reference: int = 0
    failed: int = 0
    """Judge calls that raised."""
    judge_calls: int = 0
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    judge_cost_usd: float | None = 0.0
    examples: list[str] = field(default_factory=list)
    """A few unreadable replies or errors, to show."""

    def add_cost(self, judge: Backend, output: ModelOutput) -> None:
        self.judge_calls += 1
        if output.usage is None:
            self.judge_cost_usd = None
            return
        self.judge_input_tokens += output.usage.input_tokens
        self.judge_output_tokens += output.usage.output_tokens
        cost = cost_usd(output.usage, provider=judge.provider, model=judge.model or "")
        self.judge_cost_usd = (
            None if cost is None or self.judge_cost_usd is None else self.judge_cost_usd + cost
        )

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


JudgeMode = Literal["score", "pairwise"]


@dataclass
class Labeller:
    """How to label: ``by`` is ``reference:METHOD``, ``judge`` or ``agreement:METHOD``."""

    by: str
    pattern: str | None = None
    judge: Backend | None = None
    judge_mode: JudgeMode = "score"
    relabel: bool = False
    concurrency: int = 4

    def __post_init__(self) -> None:
        kind, _, method = self.by.partition(":")
        if kind == "agreement" and method == "judge":
            if self.judge is None:
                raise ConfigError("--by", "agreement:judge needs a judge model (--judge-config)")
        elif kind in ("reference", "agreement"):
            method = method or "normalized"
            known = REFERENCE_METHODS if kind == "reference" else AGREEMENT_METHODS
            if method not in known:
                raise ConfigError("--by", f"{kind}:{method}: known methods are {', '.join(known)}")
            if method == "regex":
                normalizer("regex", self.pattern)  # fail now on a bad pattern
        elif kind == "judge":
            if self.judge is None:
                raise ConfigError("--by", "judge labelling needs a judge model")
            method = self.judge_mode
        else:
            raise ConfigError(
                "--by", f"{self.by!r}: expected reference:METHOD, judge:MODEL or agreement:METHOD"
            )
        self.kind, self.method = kind, method

    @property
    def name(self) -> str:
        if self.kind == "judge":
            assert self.judge is not None
            return f"judge:{self.judge.model}:{self.method}"
        if self.method == "judge" and self.judge is not None:
            return f"agreement:judge:{self.judge.model}"
        return f"{self.kind}:{self.method}"

    async def label(self, items: list[dict[str, Any]], models: Sequence[str]) -> LabelStats:
        """Set ``quality``, ``labelled_by`` and ``label`` on the answers of ``models`` (the last one
        is the reference rung of ``pairwise`` and ``agreement``), in place."""
        stats = LabelStats()
        gate = asyncio.Semaphore(self.concurrency)
        last = models[-1]

        async def one(item: dict[str, Any], model: str) -> None:
            answers: dict[str, Any] = item["answers"]
            answer = answers.get(model)
            if answer is None:
                return
            if answer.get("quality") is not None and not self.relabel:
                stats.kept += 1
                return
            result: tuple[float, dict[str, Any]] | None
            if self.kind == "reference":
                reference = item.get("reference")
                if reference is None:
                    stats.no_reference += 1
                    return
                result = by_reference(answer["text"], str(reference), self.method, self.pattern)
            elif self.kind == "agreement" and self.method == "judge":
                if last not in answers:
                    return
                if model == last:
                    result = (1.0, {"reference_rung": True})
                else:
                    async with gate:
                        result = await self._equivalent(item, model, last, stats)
                    if result is None:
                        return
            elif self.kind == "agreement":
                if last not in answers:
                    return
                norm = normalizer(self.method, self.pattern)
                mine, theirs = norm(answer["text"]), norm(answers[last]["text"])
                same = model == last or (mine is not None and mine == theirs)
                result = (float(same), {"answer": mine, "last_rung": theirs})
            else:
                async with gate:
                    result = await self._judged(item, model, last, stats)
                if result is None:
                    return
            quality, details = result
            answer["quality"] = quality
            answer["labelled_by"] = self.name
            answer["label"] = _jsonable(details)
            stats.labelled += 1

        await asyncio.gather(*(one(item, m) for item in items for m in models))
        return stats

    async def _equivalent(
        self, item: Mapping[str, Any], model: str, last: str, stats: LabelStats
    ) -> tuple[float, dict[str, Any]] | None:
        """Agreement judged: does the answer say the same as the last rung's?"""
        assert self.judge is not None
        question = _messages(item["request"])
        request = equivalence_request(question, item["answers"][model]["text"], item["answers"][last]["text"])
        try:
            output = await self.judge.ainvoke(request)
        except Exception as exc:  # one failed call leaves one answer unlabelled
            stats.failed += 1
            stats.note(f"{item['id']} {model}: {type(exc).__name__}: {str(exc)[:120]}")
            return None
        stats.add_cost(self.judge, output)
        verdict = read_yes_no(output.text)
        if verdict is None:
            stats.unreadable += 1
            stats.note(f"{item['id']} {model}: {output.text[:120]!r}")
            return None
        return float(verdict), {"same": verdict, "reply": output.text[:300]}

    async def _judged(
        self, item: Mapping[str, Any], model: str, last: str, stats: LabelStats
    ) -> tuple[float, dict[str, Any]] | None:
        assert self.judge is not None
        question = _messages(item["request"])
        text = item["answers"][model]["text"]
        try:
            if self.method == "score":
                output = await self.judge.ainvoke(score_request(question, text))
                stats.add_cost(self.judge, output)
                score = read_score(output.text)
                if score is None:
                    stats.unreadable += 1
                    stats.note(f"{item['id']} {model}: {output.text[:120]!r}")
                    return None
                return score, {"score": score, "reply": output.text[:300]}
            if model == last:
                return 1.0, {"reference_rung": True}
            other = item["answers"][last]["text"]
            first = await self.judge.ainvoke(pairwise_request(question, text, other))
            second = await self.judge.ainvoke(pairwise_request(question, other, text))
            stats.add_cost(self.judge, first)
            stats.add_cost(self.judge, second)
        except Exception as exc:  # one failed call leaves one answer unlabelled
            stats.failed += 1
            stats.note(f"{item['id']} {model}: {type(exc).__name__}: {str(exc)[:120]}")
            return None
        a_first, b_first = read_better(first.text), read_better(second.text)
        if a_first is None or b_first is None:
            stats.unreadable += 1
            stats.note(f"{item['id']} {model}: {first.text[:60]!r} / {second.text[:60]!r}")
            return None
        # "at least as good as the last rung's" in each order: A first, then B (= ours) second
        ours_first = a_first in ("a", "tie")
        ours_second = b_first in ("b", "tie")
        quality = 1.0 if ours_first and ours_second else 0.0 if not ours_first and not ours_second else 0.5
        return quality, {
            "answer_first": a_first,
            "answer_second": b_first,
            "position_bias": ours_first != ours_second,
        }


def _messages(request: Any) -> list[Message]:
    if isinstance(request, str):
        return [Message("user", request)]
    return [Message(turn["role"], turn["content"]) for turn in request]


def _jsonable(details: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool) or v is None else repr(v) for k, v in details.items()
    }
