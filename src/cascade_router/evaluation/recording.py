"""Recording every rung's answer to the user's own prompts: the first step of tuning a ladder.

``record`` calls every rung of a ladder (and every judge its scorers use) on every prompt and
writes the evaluation dataset format (``datasets.py``), unlabelled: each answer's text, token
logprobs where the provider returns them, usage, cost, latency and the score the rung's scorer
gave. ``cascade-router label`` then fills the qualities.

Every model call goes through a cache keyed by (provider, model, request options, messages),
appended to a JSONL file as soon as the call returns. That makes a run resumable (a crash loses at
most the calls in flight; re-running answers the rest from the cache) and makes re-recording with
one more rung call only that rung. Calls are limited per provider, and rate-limit errors are
retried with backoff (honouring ``Retry-After`` when the provider sends one).
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from cascade_router.attempts import Attempt
from cascade_router.backend import Backend, BackendBase
from cascade_router.cascade import Cascade
from cascade_router.engine import Call
from cascade_router.errors import ConfigError
from cascade_router.evaluation.jsonl import read_objects, write_objects
from cascade_router.model_io import Message, ModelOutput, Request, TokenLogprob, Usage
from cascade_router.observability.redaction import redact
from cascade_router.openai_format import parse_logprobs
from cascade_router.pricing import cost_usd

_current_item: contextvars.ContextVar[str] = contextvars.ContextVar("cascade_record_item")
"""The (item, rung) being probed: a judge call made while scoring it is noted on that answer."""

CHARS_PER_TOKEN = 4
"""The estimate's tokens per character of prompt: about 4 characters per token for English text
(OpenAI's rule of thumb); an estimate, shown as one."""


# -- prompts ---------------------------------------------------------------------------------


class Prompt(BaseModel):
    """One line of a prompts file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: str | list[dict[str, str]]
    """The prompt text, or a conversation of ``{"role", "content"}`` turns."""
    reference: str | None = None
    """A reference answer, for ``label --by reference``."""
    id: str | None = None
    """Unique within the file; derived from the request when absent."""

    @field_validator("request")
    @classmethod
    def _not_empty(cls, value: str | list[dict[str, str]]) -> str | list[dict[str, str]]:
        if not value:
            raise ValueError("is empty")
        if isinstance(value, list):
            for turn in value:
                if set(turn) != {"role", "content"}:
                    raise ValueError('each turn needs exactly "role" and "content"')
        return value

    @property
    def item_id(self) -> str:
        if self.id is not None:
            return self.id
        digest = hashlib.sha256(json.dumps(self.request, sort_keys=True).encode()).hexdigest()
        return f"p-{digest[:12]}"

    def messages(self) -> list[Message]:
        if isinstance(self.request, str):
            return [Message("user", self.request)]
        return [Message(turn["role"], turn["content"]) for turn in self.request]


def read_prompts(path: str | Path, *, column: str = "prompt") -> list[Prompt]:
    """Prompts from JSONL (``request``, optional ``reference`` and ``id``) or CSV (a ``column``
    of prompts, optional ``reference`` and ``id`` columns). Errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "no such prompts file")
    rows: list[tuple[int, dict[str, Any]]] = []
    if p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise ConfigError(f"{p}:1", f"no {column!r} column; the columns are {reader.fieldnames}")
            for row in reader:
                record: dict[str, Any] = {"request": row[column]}
                for key in ("reference", "id"):
                    if row.get(key):
                        record[key] = row[key]
                rows.append((reader.line_num, record))
    else:
        rows.extend(read_objects(p))
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for line_no, record in rows:
        try:
            prompt = Prompt.model_validate(record)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "line"
            raise ConfigError(f"{p}:{line_no}", f"{where}: {err['msg']}") from None
        if prompt.item_id in seen:
            raise ConfigError(
                f"{p}:{line_no}", f"id {prompt.item_id!r} is already used on line {seen[prompt.item_id]}"
            )
        seen[prompt.item_id] = line_no
        prompts.append(prompt)
    if not prompts:
        raise ConfigError(str(p), "the prompts file has no prompts")
    return prompts


# -- the call cache ----------------------------------------------------------------------------


def _logprobs_json(tokens: Sequence[TokenLogprob] | None) -> dict[str, Any] | None:
    if tokens is None:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "top_logprobs": [{"token": tok, "logprob": lp} for tok, lp in t.top],
            }
            for t in tokens
        ]
    }


def call_key(backend: Backend, request: Request) -> str:
    """What identifies a model call: the same key, the same answer to reuse."""
    payload = {
        "provider": backend.provider,
        "model": backend.model,
        "options": {k: repr(v) for k, v in sorted(backend.request_options.items())},
        "messages": [[m.role, m.content] for m in request.messages],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode()).hexdigest()


class CallCache:
    """Model answers by ``call_key``, in an append-only JSONL file: each answer is written and
    flushed the moment it arrives, so a crash loses only the calls in flight."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a crash: that call is simply made again
                    if isinstance(entry, dict) and "key" in entry:
                        self.entries[entry["key"]] = entry
        self._file = self.path.open("a", encoding="utf-8")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, output: ModelOutput, latency_s: float) -> None:
        entry = {
            "key": key,
            "text": output.text,
            "model": output.model,
            "finish_reason": output.finish_reason,
            "input_tokens": output.usage.input_tokens if output.usage else None,
            "output_tokens": output.usage.output_tokens if output.usage else None,
            "logprobs": _logprobs_json(output.logprobs),
            "latency_s": latency_s,
        }
        self.entries[key] = entry
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def output_from_entry(entry: Mapping[str, Any]) -> ModelOutput:
    """A cached or recorded call's answer, as the backend returned it."""
    tokens_in, tokens_out = entry.get("input_tokens"), entry.get("output_tokens")
    return ModelOutput(
        text=entry["text"],
        logprobs=parse_logprobs(entry.get("logprobs")),
        usage=Usage(tokens_in, tokens_out) if tokens_in is not None and tokens_out is not None else None,
        model=entry.get("model"),
        finish_reason=entry.get("finish_reason"),
        extra={"latency_s": entry.get("latency_s"), "cached": True},
    )


def is_rate_limit(exc: BaseException) -> bool:
    """A provider's "slow down": HTTP 429, or an SDK's rate-limit error class."""
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return status == 429 or "ratelimit" in type(exc).__name__.lower()


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        value = float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None
    return min(value, 120.0)


@dataclass
class Limits:
    """How hard ``record`` may push each provider."""

    concurrency: int = 4
    """Calls in flight per provider."""
    rate_limit_retries: int = 6
    """Retries of a rate-limited call (exponential backoff with jitter, or ``Retry-After``)."""
    max_backoff_s: float = 60.0
    _gates: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def gate(self, provider: str | None) -> asyncio.Semaphore:
        key = provider or "?"
        if key not in self._gates:
            self._gates[key] = asyncio.Semaphore(self.concurrency)
        return self._gates[key]


class RecordingBackend(BackendBase):
    """A backend seen through the cache, the provider's concurrency gate and rate-limit retries."""

    def __init__(
        self,
        inner: Backend,
        cache: CallCache,
        limits: Limits,
        stats: RecordStats,
        sink: Callable[[str], list[dict[str, Any]] | None] | None = None,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.limits = limits
        self.stats = stats
        self.sink = sink
        """For judges: where each call's cache entry is noted, keyed by the request it was made
        for (``Request.metadata["item_id"]``), so the answer it judged carries it."""

    @property
    def provider(self) -> str | None:
        return self.inner.provider

    @property
    def model(self) -> str | None:
        return self.inner.model

    @property
    def request_options(self) -> Mapping[str, Any]:
        return self.inner.request_options

    @property
    def returns_logprobs(self) -> bool | None:
        return self.inner.returns_logprobs

    def invoke(self, request: Request) -> ModelOutput:
        return asyncio.run(self.ainvoke(request))

    async def ainvoke(self, request: Request) -> ModelOutput:
        key = call_key(self.inner, request)
        entry = self.cache.get(key)
        if entry is not None:
            self.stats.cached += 1
            self._note(entry)
            return output_from_entry(entry)

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = _retry_after(exc) if exc is not None else None
            backoff = wait_exponential_jitter(initial=1, max=self.limits.max_backoff_s)(state)
            return after if after is not None else backoff

        async with self.limits.gate(self.inner.provider):
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_rate_limit),
                wait=wait,
                stop=stop_after_attempt(self.limits.rate_limit_retries + 1),
                before_sleep=lambda _: self.stats.count_rate_limit(),
                reraise=True,
            ):
                with attempt:
                    started = time.monotonic()
                    output = await self.inner.ainvoke(request)
            latency = time.monotonic() - started
        self.stats.called += 1
        self.cache.put(key, output, latency)
        self._note(self.cache.entries[key])
        return output

    def _note(self, entry: dict[str, Any]) -> None:
        if self.sink is None:
            return
        calls = self.sink(_current_item.get(""))
        if calls is not None:
            calls.append(entry)

    def stream(self, request: Request) -> Any:
        raise NotImplementedError("recording calls models whole")

    def astream(self, request: Request) -> Any:
        raise NotImplementedError("recording calls models whole")

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- the estimate ------------------------------------------------------------------------------


@dataclass
class EstimateRow:
    rung: str
    model: str
    calls: int
    """Calls not answered by the cache."""
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    """None when the model has no known price."""


def estimate(
    cascade: Cascade, prompts: Sequence[Prompt], cache: CallCache, *, output_tokens: int
) -> list[EstimateRow]:
    """What recording would cost, before calling anything: prompt tokens estimated from their
    length (``CHARS_PER_TOKEN``), each answer as long as the rung's ``max_tokens`` or else
    ``output_tokens``, priced from the catalog (or the rung's ``price``). Cached calls are free.
    Judge calls are estimated at one answer's length plus the prompt, for each rung they judge."""
    rows = []
    for i, (rung, backend) in enumerate(zip(cascade.engine.rungs, cascade.backends, strict=True)):
        todo = [p for p in prompts if cache.get(call_key(backend, Request(messages=p.messages()))) is None]
        options = backend.request_options
        per_answer = int(options.get("max_tokens") or options.get("max_completion_tokens") or output_tokens)
        chars = sum(sum(len(m.content) for m in p.messages()) for p in todo)
        tokens_in = chars // CHARS_PER_TOKEN + 4 * len(todo)
        tokens_out = per_answer * len(todo)
        price = cost_usd(
            Usage(tokens_in, tokens_out), provider=rung.provider, model=rung.model, price=rung.price
        )
        rows.append(
            EstimateRow(
                cascade.rungs[i].name or str(rung.model),
                str(rung.model),
                len(todo),
                tokens_in,
                tokens_out,
                price,
            )
        )
        for judge in rung.scorer.models() if rung.scorer is not None else []:
            judge_backend = cascade._resolve(judge, i)
            judge_in = tokens_in + tokens_out + 60 * len(todo)  # the prompt, the answer, the rubric
            judge_price = cost_usd(
                Usage(judge_in, 8 * len(todo)),
                provider=judge_backend.provider,
                model=judge_backend.model or "",
            )
            rows.append(
                EstimateRow(
                    f"judge of {rows[-1].rung}",
                    str(judge_backend.model),
                    len(todo),
                    judge_in,
                    8 * len(todo),
                    judge_price,
                )
            )
    return rows


# -- recording ---------------------------------------------------------------------------------


@dataclass
class RecordStats:
    items: int = 0
    """Items written with every rung's answer."""
    incomplete: int = 0
    """Items written without some rung's answer (its call failed; re-run to retry)."""
    called: int = 0
    cached: int = 0
    rate_limited: int = 0
    failures: list[str] = field(default_factory=list)
    spent_usd: float = 0.0
    unpriced_calls: int = 0

    def count_rate_limit(self) -> None:
        self.rate_limited += 1


def _answer(attempt: Attempt) -> dict[str, Any] | None:
    output = attempt.output
    if output is None or attempt.decision == "error":
        return None
    usage = output.usage
    latency = output.extra.get("latency_s") if output.extra.get("cached") else attempt.latency_s
    answer: dict[str, Any] = {
        "text": output.text,
        "quality": None,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "logprobs": _logprobs_json(output.logprobs),
        "latency_s": latency,
        "model": output.model,
        "cost_usd": attempt.cost_usd,
        "score": attempt.score,
    }
    if attempt.method is not None:
        scorer: dict[str, Any] = {"method": attempt.method, "cost_usd": attempt.scorer_cost_usd}
        if attempt.scorer_usage.total_tokens:
            scorer["input_tokens"] = attempt.scorer_usage.input_tokens
            scorer["output_tokens"] = attempt.scorer_usage.output_tokens
        details = {k: v for k, v in attempt.details.items() if isinstance(v, str | int | float | bool)}
        if details:
            scorer["details"] = details
        answer["scorer"] = scorer
    return answer


async def record(
    cascade: Cascade,
    prompts: Sequence[Prompt],
    out: str | Path,
    cache: CallCache,
    *,
    limits: Limits | None = None,
    max_cost_usd: float | None = None,
    progress: Callable[[int], None] | None = None,
    checkpoint_s: float = 5.0,
) -> RecordStats:
    """Record every rung's answer to every prompt into ``out`` (the dataset format, qualities
    unset). ``out`` is rewritten whole, atomically, every ``checkpoint_s`` seconds in which
    items were finished, and at the end; items already in it keep their labels. Stops calling
    models once ``max_cost_usd`` is spent (what is recorded so far is kept)."""
    limits = limits or Limits()
    stats = RecordStats()
    out_path = Path(out)
    previous = _read_existing(out_path)
    backends = [RecordingBackend(b, cache, limits, stats) for b in cascade.backends]
    judges: dict[tuple[int, int], RecordingBackend] = {}
    # The judge calls made while scoring each (item, rung), to store beside that answer.
    judged: dict[str, list[dict[str, Any]]] = {}

    def resolve(model: Any, rung: int) -> Backend:
        key = (id(model), rung)
        if key not in judges:
            judges[key] = RecordingBackend(cascade._resolve(model, rung), cache, limits, stats, judged.get)
        return judges[key]

    names = [r.name or str(r.model) for r in cascade.rungs]
    finished: dict[str, dict[str, Any]] = {}
    budget_hit = asyncio.Event()

    async def one(prompt: Prompt) -> None:
        request = Request(messages=prompt.messages(), metadata={"item_id": prompt.item_id})
        call = Call(request, backends, resolve)
        item = previous.get(prompt.item_id) or {
            "id": prompt.item_id,
            "request": prompt.request,
            "reference": prompt.reference,
            "answers": {},
        }
        if prompt.reference is not None:
            item["reference"] = prompt.reference
        answers: dict[str, Any] = dict(item.get("answers") or {})
        for index, name in enumerate(names):
            if budget_hit.is_set():
                break
            slot = f"{prompt.item_id}\x00{index}"
            judged[slot] = []
            token = _current_item.set(slot)
            try:
                attempt = await cascade.engine.aprobe_rung(call, index)
            finally:
                _current_item.reset(token)
            recorded = _answer(attempt)
            judge_calls = judged.pop(slot)
            if recorded is not None and judge_calls:
                recorded["judge_calls"] = judge_calls
            if recorded is None:
                stats.failures.append(
                    f"{prompt.item_id} {name}: {redact(attempt.error or attempt.reason)[:300]}"
                )
                continue
            old = answers.get(name)
            if isinstance(old, dict) and old.get("text") == recorded["text"]:
                recorded["quality"] = old.get("quality")  # same answer: keep its label
                for key in ("label", "labelled_by"):
                    if key in old:
                        recorded[key] = old[key]
            answers[name] = recorded
            assert attempt.output is not None
            if not attempt.output.extra.get("cached"):
                cost = attempt.total_cost_usd
                if cost is None:
                    stats.unpriced_calls += 1
                else:
                    stats.spent_usd += cost
            if max_cost_usd is not None and stats.spent_usd > max_cost_usd:
                budget_hit.set()
        # In ladder order (a rung added to the ladder later goes where it stands in it), then
        # answers of rungs no longer in the ladder.
        item["answers"] = {n: answers[n] for n in names if n in answers} | {
            n: a for n, a in answers.items() if n not in names
        }
        finished[prompt.item_id] = item
        if all(n in answers for n in names):
            stats.items += 1
        else:
            stats.incomplete += 1
        if progress is not None:
            progress(1)

    async def write_through() -> None:
        written = 0
        while True:
            await asyncio.sleep(checkpoint_s)
            if len(finished) != written:  # nothing new: no rewrite
                written = len(finished)
                _write(out_path, prompts, finished, previous)

    writer = asyncio.create_task(write_through())
    try:
        gate = asyncio.Semaphore(max(1, limits.concurrency * 2))

        async def bounded(prompt: Prompt) -> None:
            async with gate:
                if budget_hit.is_set():
                    return
                await one(prompt)

        await asyncio.gather(*(bounded(p) for p in prompts))
    finally:
        writer.cancel()
        _write(out_path, prompts, finished, previous)
    return stats


def _read_existing(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    items: dict[str, dict[str, Any]] = {}
    for line_no, item in read_objects(path):
        if "id" not in item:
            raise ConfigError(f"{path}:{line_no}", "an item without an id")
        items[str(item["id"])] = item
    return items


def _write(
    path: Path, prompts: Iterable[Prompt], finished: Mapping[str, Any], previous: Mapping[str, Any]
) -> None:
    """The output in prompt order (then items of earlier runs no longer in the prompts), written
    to a temporary file and renamed over the old one: a reader never sees half a file."""
    order = [p.item_id for p in prompts]
    rest = [i for i in previous if i not in set(order)]
    items = (finished.get(i) or previous.get(i) for i in [*order, *rest])
    write_objects(path, (item for item in items if item is not None and item.get("answers")))
