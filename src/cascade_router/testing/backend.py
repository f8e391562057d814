"""``ScriptedBackend``: the fake for the core ``Backend`` seam."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any

from cascade_router.backend import BackendBase
from cascade_router.chat_body import json_problem
from cascade_router.model_io import ModelOutput, Request, ToolCall, Usage
from cascade_router.openai_format import parse_logprobs
from cascade_router.testing.replies import Reply, Script, tokenize


def reply_output(reply: Reply, request: Request, model: str) -> ModelOutput:
    """The ``ModelOutput`` a real backend would produce for this reply."""
    usage = reply.resolved_usage(sum(len(m.content) for m in request.messages))
    return ModelOutput(
        text=reply.text,
        raw=reply,
        logprobs=parse_logprobs(reply.resolved_logprobs()),
        tool_calls=tuple(
            ToolCall(str(c["name"]), dict(c.get("args", {})), c.get("id") or f"call_{i}")
            for i, c in enumerate(reply.tool_calls)
        ),
        invalid_tool_calls=tuple(str(c.get("error") or c) for c in reply.invalid_tool_calls),
        usage=Usage(*usage) if usage is not None else None,
        model=reply.model or model,
        finish_reason=reply.finish_reason,
        # A request that asked for JSON (the server's response_format) is checked as a real
        # backend checks it.
        parse_error=json_problem(request, reply.text, bool(reply.tool_calls or reply.invalid_tool_calls)),
    )


class _Stream:
    def __init__(self, backend: ScriptedBackend, request: Request) -> None:
        self._backend = backend
        self._request = request
        self._reply = backend.script.next()
        self._done = False
        self._sent = 0

    def __iter__(self) -> Iterator[str]:
        reply = self._reply
        if reply.delay:
            time.sleep(reply.delay)
        reply.raise_error()
        for i, token in enumerate(tokenize(reply.text)):
            if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                raise reply.stream_error()
            if i and reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            self._sent = i + 1
            yield token
        self._done = True

    async def __aiter__(self) -> AsyncIterator[str]:
        reply = self._reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        reply.raise_error()
        for i, token in enumerate(tokenize(reply.text)):
            if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                raise reply.stream_error()
            if i and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            self._sent = i + 1
            yield token
        self._done = True

    def output(self) -> ModelOutput:
        if not self._done:
            raise RuntimeError("output() before the stream finished")
        return reply_output(self._reply, self._request, self._backend.model)

    def partial(self) -> ModelOutput:
        """The answer so far: the chunks sent, with their logprobs (no usage yet)."""
        whole = reply_output(self._reply, self._request, self._backend.model)
        n = self._sent
        return replace(
            whole,
            text="".join(tokenize(self._reply.text)[:n]),
            logprobs=tuple(whole.logprobs[:n]) if whole.logprobs is not None else None,
            usage=None,
            finish_reason=None,
        )

    @property
    def chunks_sent(self) -> int:
        """How many chunks the stream has yielded (what an aborted call was charged for)."""
        return self._sent


class ScriptedBackend(BackendBase):
    """A model that answers from a script of ``Reply`` objects, for testing cascades.

    ``ScriptedBackend("cheap", ["Paris", Reply("Lyon", confidence=0.3), TimeoutError])``
    answers "Paris", then "Lyon" with low-confidence logprobs, then raises. ``requests`` keeps
    every request it received, so tests can check which rungs were called (the last 1,000: a
    fake serving a load test must not grow without bound). In a config file it is
    ``{provider: scripted, model: cheap, replies: [...], fault_rate: 0.1}``.
    """

    def __init__(
        self,
        model: str,
        replies: Sequence[Any],
        *,
        provider: str | None = "scripted",
        cycle: bool = True,
        fault_rate: float = 0.0,
        seed: int = 0,
        max_tokens: int | None = None,
    ) -> None:
        """``max_tokens``: the answer length the fake says it is limited to, which the cost and
        budget rules bound its cost by (the script's answers are not cut to it)."""
        self._model = model
        self.max_tokens = max_tokens
        self._provider = provider
        self.script = Script(replies, cycle=cycle, fault_rate=fault_rate, seed=seed)
        self.requests: deque[Request] = deque(maxlen=1000)

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str | None:
        return self._provider

    @property
    def calls(self) -> int:
        return self.script.calls

    def invoke(self, request: Request) -> ModelOutput:
        self.requests.append(request)
        reply = self.script.next()
        if reply.whole_delay():
            time.sleep(reply.whole_delay())
        reply.raise_error()
        return reply_output(reply, request, self._model)

    async def ainvoke(self, request: Request) -> ModelOutput:
        self.requests.append(request)
        reply = self.script.next()
        if reply.whole_delay():
            await asyncio.sleep(reply.whole_delay())
        reply.raise_error()
        return reply_output(reply, request, self._model)

    def stream(self, request: Request) -> _Stream:
        self.requests.append(request)
        return _Stream(self, request)

    def astream(self, request: Request) -> _Stream:
        self.requests.append(request)
        return _Stream(self, request)
