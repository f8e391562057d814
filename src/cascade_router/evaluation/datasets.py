"""Recorded answers for offline evaluation: the dataset format and its loader.

One JSON object per line::

    {"id": "gsm8k-0001",
     "request": "What is 2+2?"                        (or [{"role": "user", "content": "..."}, ...]),
     "reference": "4",                                (optional)
     "answers": {
        "mixtral-8x7b": {"text": "...", "quality": 1, "input_tokens": 1190, "output_tokens": 95,
                         "logprobs": null, "latency_s": null},
        "gpt-4-1106-preview": {...}}}

``quality`` is a number: 1/0 (or true/false) for correct/incorrect, or a graded score (1-10...);
the metrics compare qualities, so any scale works as long as one dataset uses one. ``logprobs``
is optional, in OpenAI format (``{"content": [...]}``) or as a bare list of tokens. Any number of
models per item; every item must have an answer for every model a ladder uses.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cascade_router.errors import ConfigError
from cascade_router.evaluation.jsonl import read_objects
from cascade_router.model_io import Message, Request


class RecordedAnswer(BaseModel):
    """One model's recorded answer to one item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    """The answer's text."""
    quality: float | None = None
    """How good the answer is: 1/0 for right/wrong, or a graded score; None until labelled
    (``cascade-router label``)."""
    input_tokens: int | None = Field(default=None, ge=0)
    """Prompt tokens the call used (None: unknown, costs are then unknown too)."""
    output_tokens: int | None = Field(default=None, ge=0)
    """Completion tokens of the answer."""
    logprobs: Any = None
    """Token logprobs in OpenAI format, when recorded."""
    latency_s: float | None = Field(default=None, ge=0)
    """How long the call took, when recorded."""
    model: str | None = None
    """The model name the provider reported (``record``)."""
    cost_usd: float | None = None
    """What the call cost (``record``); None when unknown."""
    score: float | None = None
    """The score the rung's scorer gave when recorded, for reference; evaluations score again."""
    scorer: dict[str, Any] | None = None
    """The recorded scoring: method, judge tokens and cost, the judge's verdict."""
    judge_calls: list[dict[str, Any]] | None = None
    """The judge calls made to score this answer when it was recorded (``record``): each with the
    key of its request, the verdict's text, usage and logprobs. Evaluations replay them instead
    of calling the judge again."""
    labelled_by: str | None = None
    """How ``quality`` was set: ``reference:last-number``, ``judge:MODEL``, ``agreement:...``."""
    label: dict[str, Any] | None = None
    """What the labeller saw or said (a judge's score and reply, both pairwise orders...)."""

    @field_validator("quality", mode="before")
    @classmethod
    def _bool_quality(cls, value: Any) -> Any:
        return float(value) if isinstance(value, bool) else value


class DatasetItem(BaseModel):
    """One request and every model's recorded answer to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """Unique within the dataset."""
    request: str | list[dict[str, str]]
    """A prompt, or a conversation of ``{"role", "content"}`` turns."""
    reference: str | None = None
    """The reference answer, when there is one (informational)."""
    answers: dict[str, RecordedAnswer]
    """Model name -> its recorded answer."""

    def messages(self) -> list[Message]:
        if isinstance(self.request, str):
            return [Message("user", self.request)]
        return [Message(turn["role"], turn["content"]) for turn in self.request]

    def to_request(self) -> Request:
        """The request the ladder sees; its metadata carries the item id for replay backends."""
        return Request(messages=self.messages(), metadata={"item_id": self.id})


class Dataset:
    """Items in file order, with lookup by id and by request text."""

    def __init__(self, items: Sequence[DatasetItem], *, name: str = "dataset") -> None:
        if not items:
            raise ConfigError(name, "the dataset has no items")
        self.name = name
        self.items = list(items)
        self._by_id: dict[str, DatasetItem] = {}
        self._by_text: dict[str, DatasetItem] = {}
        for item in self.items:
            if item.id in self._by_id:
                raise ConfigError(name, f"item id {item.id!r} appears twice")
            self._by_id[item.id] = item
            self._by_text.setdefault(item.messages()[-1].content, item)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[DatasetItem]:
        return iter(self.items)

    def require_labels(self, models: Sequence[str]) -> None:
        """Raise, naming the first item and the count, when an answer of ``models`` has no
        quality yet: evaluating unlabelled answers would silently count them as wrong."""
        missing = [(item.id, m) for item in self.items for m in models if item.answers[m].quality is None]
        if missing:
            item_id, model = missing[0]
            raise ConfigError(
                self.name,
                f"{len(missing)} answers have no quality yet (first: item {item_id!r}, model "
                f"{model!r}): label them first, e.g. cascade-router label FILE --by reference",
            )

    def quality(self, item_id: str, model: str) -> float:
        """A labelled answer's quality (see ``require_labels``)."""
        value = self.get(item_id).answers[model].quality
        if value is None:
            raise ConfigError(self.name, f"item {item_id!r}: the answer of {model!r} is not labelled")
        return value

    @cached_property
    def judge_calls(self) -> dict[str, dict[str, Any]]:
        """Every recorded judge call, by the key of its request (``recording.call_key``)."""
        return {
            call["key"]: call
            for item in self.items
            for answer in item.answers.values()
            for call in answer.judge_calls or ()
            if isinstance(call, dict) and "key" in call
        }

    @cached_property
    def models(self) -> list[str]:
        """Models that answered every item."""
        common = set(self.items[0].answers)
        for item in self.items[1:]:
            common &= set(item.answers)
        return sorted(common)

    def get(self, item_id: str) -> DatasetItem:
        try:
            return self._by_id[item_id]
        except KeyError:
            raise KeyError(f"no item {item_id!r} in {self.name}") from None

    def find(self, request: Request) -> DatasetItem:
        """The item a request comes from: by its id when it carries one, else by its text."""
        item_id = request.metadata.get("item_id")
        if isinstance(item_id, str):
            return self.get(item_id)
        text = request.messages[-1].content if request.messages else ""
        try:
            return self._by_text[text]
        except KeyError:
            raise KeyError(f"no item in {self.name} has the request {text[:60]!r}") from None

    def subset(self, ids: Sequence[str]) -> Dataset:
        return Dataset([self.get(i) for i in ids], name=self.name)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], *, name: str = "dataset") -> Dataset:
        items = []
        for line, record in enumerate(records, start=1):
            try:
                items.append(DatasetItem.model_validate(record))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ConfigError(f"{name}:{line}", f"{where}: {err['msg']}") from exc
        return cls(items, name=name)

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """A JSONL file (optionally gzipped), or ``builtin:routellm-gsm8k`` for the shipped data."""
        text = str(path)
        if text.startswith("builtin:"):
            return builtin_dataset(text.removeprefix("builtin:"))
        p = Path(path)
        records = [record for _, record in read_objects(p)]
        return cls.from_records(records, name=p.name)


BUILTIN = {"routellm-gsm8k": "routellm_gsm8k.jsonl.gz"}


def builtin_dataset(name: str) -> Dataset:
    """A dataset shipped with the package (see ``cascade_router/data/README.md``)."""
    if name not in BUILTIN:
        raise ConfigError("dataset", f"unknown built-in dataset {name!r}; known: {sorted(BUILTIN)}")
    ref = resources.files("cascade_router.data").joinpath(BUILTIN[name])
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return Dataset.from_records(records, name=f"builtin:{name}")


def dataset_from_log(records: Iterable[Mapping[str, Any]], *, name: str = "decision log") -> Dataset:
    """A dataset from decision-log records that stored their content and were labelled.

    Each record becomes an item; each rung's answer that has a label becomes an answer, keyed by
    the rung's name. A label is the mean of the feedback given for that rung (``rung=i``), or, for
    the rung that answered, the feedback given on the answer itself. Unlabelled answers are left
    out: a cascade's log only holds a stronger rung's answer for requests that escalated, so what
    can be learned or calibrated from it is what was labelled.
    """
    items = []
    for record in records:
        content = record.get("content")
        if not content:
            continue
        answers: dict[str, dict[str, Any]] = {}
        feedback = record.get("feedback") or []
        for i, attempt in enumerate(record.get("attempts") or []):
            texts = content.get("answers") or []
            text = texts[i] if i < len(texts) else None
            if text is None:
                continue
            labels = [f["score"] for f in feedback if f.get("rung") == i]
            if not labels and i == record.get("answered_rung"):
                labels = [f["score"] for f in feedback if f.get("rung") is None]
            if not labels:
                continue
            answers[attempt["name"]] = {
                "text": text,
                "quality": sum(labels) / len(labels),
                "input_tokens": attempt.get("input_tokens"),
                "output_tokens": attempt.get("output_tokens"),
            }
        if answers:
            items.append({"id": record["request_id"], "request": content["request"], "answers": answers})
    if not items:
        raise ConfigError(
            name,
            "no logged request has both stored content and a label: log with "
            "DecisionLog(..., store_content=True) and record feedback (per rung with rung=i)",
        )
    return Dataset.from_records(items, name=name)
