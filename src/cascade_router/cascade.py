"""``Cascade``: a ladder of core ``Backend`` rungs, usable without any LLM framework."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cascade_router.attempts import Result
from cascade_router.backend import Backend
from cascade_router.backends import backend_from
from cascade_router.config import LadderConfig, Rung, as_rungs, check_ladder, load_config
from cascade_router.decision_log import DecisionLog, shared_log
from cascade_router.engine import Call, Engine, StreamEvent, model_key, resolve_judges, runtimes_for
from cascade_router.errors import ConfigError
from cascade_router.model_io import Message, Request
from cascade_router.policy import OnExhausted
from cascade_router.telemetry import Telemetry

Prompt = str | Sequence[Message] | Request


def _request(prompt: Prompt) -> Request:
    if isinstance(prompt, Request):
        return prompt
    if isinstance(prompt, str):
        return Request.from_text(prompt)
    return Request(messages=list(prompt))


def _check_signals(rung: Rung, backend: Backend, field: str) -> None:
    # A logprob scorer on a model that never returns logprobs would escalate every request for a
    # missing signal: a configuration mistake, so it is refused here rather than paid for later.
    blind = not getattr(backend, "returns_logprobs", True)
    if blind and rung.scorer is not None and rung.scorer.needs_logprobs():
        raise ConfigError(
            field,
            f"{backend!r} returns no token logprobs, so a {rung.scorer.method!r} scorer that needs them "
            "would never give a score; use a judge, validity, learned or callable scorer, or put a "
            "judge after the logprob scorer in a first_available scorer",
        )


class Cascade:
    """Runs a ladder whose models are ``Backend`` objects (native SDK backends, replays, fakes),
    with no LLM framework involved.

    A rung's ``model`` may be a ``Backend``, a ``provider:model`` string (``openai:gpt-4o-mini``,
    ``anthropic:claude-haiku-4-5``) or a mapping with ``provider``, ``model`` and backend options.
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
        decision_log: str | Path | DecisionLog | None = None,
        tracing: bool = True,
        inference_spans: bool = True,
    ) -> None:
        """``decision_log``: a SQLite path, a SQLAlchemy URL or a ``DecisionLog`` that gets one
        record per request. ``tracing``: emit OpenTelemetry spans through the global tracer
        provider. ``inference_spans``: one ``chat {model}`` span per model call (turn off beside a
        provider instrumentation, which makes its own)."""
        self.rungs = as_rungs(list(rungs))
        check_ladder(self.rungs, accept_last=accept_last)
        self.name = name
        self.backends = [backend_from(r.model, f"rungs[{i}].model") for i, r in enumerate(self.rungs)]
        for i, (rung, backend) in enumerate(zip(self.rungs, self.backends, strict=True)):
            _check_signals(rung, backend, f"rungs[{i}].scorer")
        self._judges = {
            key: judge
            for key, (judge, _, _) in resolve_judges(
                self.rungs, backend_from, lambda b: (b.provider, b.model)
            ).items()
        }
        identities = [(b.provider, b.model) for b in self.backends]
        runtimes = runtimes_for(self.rungs, identities, [f"rung{i}" for i in range(len(self.rungs))])
        self.engine = Engine(
            runtimes,
            on_exhausted,
            accept_last=accept_last,
            name=name,
            telemetry=Telemetry(
                name, [r.name for r in runtimes], enabled=tracing, inference_spans=inference_spans
            ),
            decision_log=shared_log(decision_log) if decision_log is not None else None,
        )

    @classmethod
    def from_config(cls, source: str | Path | Mapping[str, Any] | LadderConfig, **options: Any) -> Cascade:
        """A cascade from a config file or mapping; ``options`` are ``decision_log``, ``tracing``
        and ``inference_spans``."""
        config = source if isinstance(source, LadderConfig) else load_config(source)
        fields = config.adapter_fields()
        fields.pop("annotate")  # the core returns results, not messages to annotate
        return cls(name=config.name, **fields, **options)

    @property
    def decision_log(self) -> DecisionLog | None:
        return self.engine.decision_log

    def _call(self, prompt: Prompt) -> Call:
        return Call(_request(prompt), self.backends, self._resolve)

    def _resolve(self, model: Any, rung: int) -> Backend:
        if model is None:
            return self.backends[rung]
        judge = self._judges.get(model_key(model))
        return judge if judge is not None else backend_from(model, "judge")

    def invoke(self, prompt: Prompt) -> Result:
        return self.engine.run(self._call(prompt))

    async def ainvoke(self, prompt: Prompt) -> Result:
        return await self.engine.arun(self._call(prompt))

    def stream(self, prompt: Prompt) -> Iterator[StreamEvent]:
        """Events: ``LiveChunk`` / ``WholeAnswer`` carry the answer, ``Finished`` the result."""
        return self.engine.stream(self._call(prompt))

    def astream(self, prompt: Prompt) -> AsyncIterator[StreamEvent]:
        return self.engine.astream(self._call(prompt))

    def record_feedback(
        self, request_id: str, score: float | bool, *, comment: str | None = None, rung: int | None = None
    ) -> None:
        """Attach a quality label to a logged request (see the decision log's ``record_feedback``)."""
        if self.engine.decision_log is None:
            raise ValueError("this Cascade has no decision_log to record feedback in")
        self.engine.decision_log.record_feedback(request_id, score, comment=comment, rung=rung)

    def close(self) -> None:
        """Close the native backends' HTTP clients (those that have a ``close``)."""
        for backend in self._all_backends():
            close = getattr(backend, "close", None)
            if callable(close):
                close()

    async def aclose(self) -> None:
        """Close the native backends' async HTTP clients (those that have an ``aclose``)."""
        for backend in self._all_backends():
            aclose = getattr(backend, "aclose", None)
            if callable(aclose):
                await aclose()

    def _all_backends(self) -> list[Backend]:
        seen: dict[int, Backend] = {}
        for backend in [*self.backends, *self._judges.values()]:
            seen.setdefault(id(backend), backend)
        return list(seen.values())
