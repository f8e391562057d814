"""``Cascade``: a ladder of core ``Backend`` rungs, usable without any LLM framework."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cascade_router.attempts import Result
from cascade_router.backend import Backend
from cascade_router.config import LadderConfig, Rung, as_rungs, check_ladder, load_config
from cascade_router.engine import Call, Engine, StreamEvent, runtimes_for
from cascade_router.errors import ConfigError
from cascade_router.model_io import Message, Request
from cascade_router.policy import OnExhausted

Prompt = str | Sequence[Message] | Request


def _request(prompt: Prompt) -> Request:
    if isinstance(prompt, Request):
        return prompt
    if isinstance(prompt, str):
        return Request.from_text(prompt)
    return Request(messages=list(prompt))


def _as_backend(model: Any, field: str) -> Backend:
    if isinstance(model, Backend):
        return model
    raise ConfigError(field, f"expected a cascade_router Backend, got {type(model).__name__}")


class Cascade:
    """Runs a ladder whose models are ``Backend`` objects (native SDK backends, replays, fakes).

    ``invoke`` returns a ``Result``: ``result.output.text`` is the answer, ``result.answered_by``
    the attempt that gave it, ``result.attempts`` every rung call.
    """

    def __init__(
        self,
        rungs: Sequence[Rung | Mapping[str, Any]],
        *,
        name: str = "cascade",
        on_exhausted: OnExhausted = "raise",
        accept_last: bool = True,
    ) -> None:
        self.rungs = as_rungs(list(rungs))
        check_ladder(self.rungs, accept_last=accept_last)
        self.name = name
        self.backends = [_as_backend(r.model, f"rungs[{i}].model") for i, r in enumerate(self.rungs)]
        for i, rung in enumerate(self.rungs):
            for model in rung.scorer.models() if rung.scorer else []:
                _as_backend(model, f"rungs[{i}].scorer.judge")
        identities = [(b.provider, b.model) for b in self.backends]
        runtimes = runtimes_for(self.rungs, identities, [f"rung{i}" for i in range(len(self.rungs))])
        self.engine = Engine(runtimes, on_exhausted, accept_last=accept_last)

    @classmethod
    def from_config(cls, source: str | Path | Mapping[str, Any] | LadderConfig) -> Cascade:
        config = source if isinstance(source, LadderConfig) else load_config(source)
        fields = config.adapter_fields()
        fields.pop("annotate")  # the core returns results, not messages to annotate
        return cls(name=config.name, **fields)

    def _call(self, prompt: Prompt) -> Call:
        return Call(_request(prompt), self.backends, self._resolve)

    def _resolve(self, model: Any, rung: int) -> Backend:
        return self.backends[rung] if model is None else _as_backend(model, "judge")

    def invoke(self, prompt: Prompt) -> Result:
        return self.engine.run(self._call(prompt))

    async def ainvoke(self, prompt: Prompt) -> Result:
        return await self.engine.arun(self._call(prompt))

    def stream(self, prompt: Prompt) -> Iterator[StreamEvent]:
        """Events: ``LiveChunk`` / ``WholeAnswer`` carry the answer, ``Finished`` the result."""
        return self.engine.stream(self._call(prompt))

    def astream(self, prompt: Prompt) -> AsyncIterator[StreamEvent]:
        return self.engine.astream(self._call(prompt))
