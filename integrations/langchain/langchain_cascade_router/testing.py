"""``ScriptedChatModel``: the fake LangChain chat model, scripted with ``cascade_router.testing.Reply``.

```python
from cascade_router.testing import Reply
from langchain_cascade_router.testing import ScriptedChatModel

cheap = ScriptedChatModel(model_name="cheap", replies=[Reply("Paris", confidence=0.95)])
```
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from cascade_router.testing import Reply, Script, tokenize


class ScriptedChatModel(BaseChatModel):
    """A LangChain chat model that answers from a script of ``Reply`` objects.

    Answers carry what ``ChatOpenAI(logprobs=True)`` would: OpenAI-format logprobs in
    ``response_metadata["logprobs"]``, ``usage_metadata``, tool calls. ``received`` keeps the
    messages of every call, so tests can check which rungs were called and with what.
    """

    replies: list[Any]
    """``Reply`` objects, or shorthands: a string (text), an exception (raised), a dict."""
    model_name: str = "scripted"
    provider: str = "scripted"
    cycle: bool = True
    """Start the script again when it runs out; otherwise raise."""

    _script: Script = PrivateAttr()
    _received: list[list[BaseMessage]] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._script = Script(self.replies, cycle=self.cycle)

    @property
    def received(self) -> list[list[BaseMessage]]:
        """The messages of every call, in order."""
        return self._received

    @property
    def calls(self) -> int:
        return self._script.calls

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # Part of LangChain's cache key: two fakes standing for two models must not share
        # cached answers.
        return {"model_name": self.model_name, "provider": self.provider}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(
            ls_provider=self.provider,
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type="chat",
        )

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _next(self, messages: list[BaseMessage]) -> Reply:
        self._received.append(list(messages))
        return self._script.next()

    def _message(self, reply: Reply, messages: list[BaseMessage]) -> AIMessage:
        chars = sum(len(m.text) for m in messages)
        usage = reply.resolved_usage(chars)
        meta: dict[str, Any] = {
            "model_name": reply.model or self.model_name,
            "finish_reason": reply.finish_reason,
        }
        logprobs = reply.resolved_logprobs()
        if logprobs is not None:
            meta["logprobs"] = logprobs
        return AIMessage(
            content=reply.text,
            tool_calls=[
                {
                    "name": c["name"],
                    "args": dict(c.get("args", {})),
                    "id": c.get("id") or f"call_{i}",
                    "type": "tool_call",
                }
                for i, c in enumerate(reply.tool_calls)
            ],
            invalid_tool_calls=[
                {
                    "name": c.get("name"),
                    "args": c.get("args"),
                    "id": c.get("id"),
                    "error": c.get("error"),
                    "type": "invalid_tool_call",
                }
                for c in reply.invalid_tool_calls
            ],
            usage_metadata=UsageMetadata(
                input_tokens=usage[0], output_tokens=usage[1], total_tokens=sum(usage)
            )
            if usage is not None
            else None,
            response_metadata=meta,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._next(messages)
        if reply.whole_delay():
            time.sleep(reply.whole_delay())
        reply.raise_error()
        return ChatResult(generations=[ChatGeneration(message=self._message(reply, messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._next(messages)
        if reply.whole_delay():
            await asyncio.sleep(reply.whole_delay())
        reply.raise_error()
        return ChatResult(generations=[ChatGeneration(message=self._message(reply, messages))])

    def _chunks(self, reply: Reply, messages: list[BaseMessage]) -> Iterator[AIMessageChunk | BaseException]:
        whole = self._message(reply, messages)
        pieces = tokenize(reply.text)
        for i, piece in enumerate(pieces):
            if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                yield reply.stream_error()
                return
            yield AIMessageChunk(content=piece)
        if reply.fail_after_chunks is not None and reply.fail_after_chunks >= len(pieces):
            yield reply.stream_error()
            return
        yield AIMessageChunk(
            content="",
            tool_call_chunks=[
                {
                    "name": c["name"],
                    "args": _json(c["args"]),
                    "id": c["id"],
                    "index": i,
                    "type": "tool_call_chunk",
                }
                for i, c in enumerate(whole.tool_calls)
            ],
            usage_metadata=whole.usage_metadata,
            response_metadata=whole.response_metadata,
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._next(messages)
        if reply.delay:
            time.sleep(reply.delay)
        reply.raise_error()
        pieces = len(tokenize(reply.text))
        for i, item in enumerate(self._chunks(reply, messages)):
            if 0 < i < pieces and reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            if isinstance(item, BaseException):
                raise item
            chunk = ChatGenerationChunk(message=item)
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        reply = self._next(messages)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        reply.raise_error()
        pieces = len(tokenize(reply.text))
        for i, item in enumerate(self._chunks(reply, messages)):
            if 0 < i < pieces and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            if isinstance(item, BaseException):
                raise item
            chunk = ChatGenerationChunk(message=item)
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


__all__ = ["Reply", "ScriptedChatModel"]
