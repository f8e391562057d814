"""``ReplayBackend``: a model that answers from a dataset's recorded answers.

Evaluation runs the very same engine, scorers and policy as live traffic; only the backend is a
replay. Answers come back with their recorded text, token counts and logprobs, so costs and logprob
scorers work as they would live.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from cascade_router.backend import Backend, BackendBase
from cascade_router.evaluation.datasets import Dataset
from cascade_router.evaluation.recording import call_key, output_from_entry
from cascade_router.model_io import ModelOutput, Request, Usage
from cascade_router.openai_format import parse_logprobs


class _Replayed:
    def __init__(self, output: ModelOutput) -> None:
        self._output = output

    def __iter__(self) -> Iterator[str]:
        yield self._output.text

    async def __aiter__(self) -> AsyncIterator[str]:
        yield self._output.text

    def output(self) -> ModelOutput:
        return self._output


class ReplayBackend(BackendBase):
    """Answers each request with ``model``'s recorded answer to the matching dataset item."""

    def __init__(self, dataset: Dataset, model: str, *, provider: str | None = None) -> None:
        if model not in dataset.models:
            raise KeyError(
                f"{dataset.name} has no answers of {model!r} for every item; it has {dataset.models}"
            )
        self.dataset = dataset
        self._model = model
        self._provider = provider

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str | None:
        return self._provider

    def _answer(self, request: Request) -> ModelOutput:
        item = self.dataset.find(request)
        answer = item.answers[self._model]
        usage = (
            Usage(answer.input_tokens, answer.output_tokens)
            if answer.input_tokens is not None and answer.output_tokens is not None
            else None
        )
        return ModelOutput(
            text=answer.text,
            raw=answer,
            logprobs=parse_logprobs(answer.logprobs),
            usage=usage,
            model=self._model,
            finish_reason="stop",
            extra={"item_id": item.id, "quality": answer.quality},
        )

    def invoke(self, request: Request) -> ModelOutput:
        return self._answer(request)

    async def ainvoke(self, request: Request) -> ModelOutput:
        return self._answer(request)

    def stream(self, request: Request) -> _Replayed:
        return _Replayed(self._answer(request))

    def astream(self, request: Request) -> _Replayed:
        return _Replayed(self._answer(request))


class ReplayJudge(BackendBase):
    """A judge whose verdicts come from the dataset where ``record`` stored them (matched by the
    key of the judge's request), and from the live judge for any request it did not see."""

    def __init__(self, live: Backend, verdicts: Mapping[str, Mapping[str, Any]]) -> None:
        self.live = live
        self.verdicts = verdicts
        self.replayed = 0
        self.called = 0

    @property
    def model(self) -> str | None:
        return self.live.model

    @property
    def provider(self) -> str | None:
        return self.live.provider

    @property
    def request_options(self) -> Mapping[str, Any]:
        return self.live.request_options

    def _recorded(self, request: Request) -> ModelOutput | None:
        entry = self.verdicts.get(call_key(self.live, request))
        if entry is None:
            return None
        self.replayed += 1
        return output_from_entry(entry)

    def invoke(self, request: Request) -> ModelOutput:
        recorded = self._recorded(request)
        if recorded is not None:
            return recorded
        self.called += 1
        return self.live.invoke(request)

    async def ainvoke(self, request: Request) -> ModelOutput:
        recorded = self._recorded(request)
        if recorded is not None:
            return recorded
        self.called += 1
        return await self.live.ainvoke(request)

    def stream(self, request: Request) -> Any:
        return self.live.stream(request)

    def astream(self, request: Request) -> Any:
        return self.live.astream(request)
