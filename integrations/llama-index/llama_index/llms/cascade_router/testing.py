"""``ScriptedLLM``: the fake LlamaIndex LLM, scripted with ``cascade_router.testing.Reply``.

```python
from cascade_router.testing import Reply
from llama_index.llms.cascade_router.testing import ScriptedLLM

cheap = ScriptedLLM(model_name="cheap", replies=[Reply("Paris", confidence=0.95)])
```
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    LogProb,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import PrivateAttr

from cascade_router.testing import Reply, Script, tokenize


class ScriptedLLM(FunctionCallingLLM):
    """A LlamaIndex LLM that answers from a script of ``Reply`` objects.

    Answers carry what ``llama-index-llms-openai`` returns: ``ChatResponse.logprobs`` (top
    alternatives per token), token counts in ``additional_kwargs``, tool calls. ``received``
    keeps the messages of every call.
    """

    replies: list[Any]
    """``Reply`` objects, or shorthands: a string (text), an exception (raised), a dict."""
    model_name: str = "scripted"
    context_window: int = 8192
    num_output: int = 1024
    function_calling: bool = True
    cycle: bool = True

    _script: Script = PrivateAttr()
    _received: list[list[ChatMessage]] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._script = Script(self.replies, cycle=self.cycle)

    @classmethod
    def class_name(cls) -> str:
        return "ScriptedLLM"

    @property
    def calls(self) -> int:
        return self._script.calls

    @property
    def received(self) -> list[list[ChatMessage]]:
        return self._received

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.num_output,
            is_chat_model=True,
            is_function_calling_model=self.function_calling,
            model_name=self.model_name,
        )

    def _next(self, messages: Sequence[ChatMessage]) -> Reply:
        self._received.append(list(messages))
        return self._script.next()

    def _response(
        self, reply: Reply, messages: Sequence[ChatMessage], text: str | None = None
    ) -> ChatResponse:
        usage = reply.resolved_usage(sum(len(m.content or "") for m in messages))
        calls = [
            {"id": c.get("id") or f"call_{i}", "name": c["name"], "args": dict(c.get("args", {}))}
            for i, c in enumerate(reply.tool_calls)
        ] + [
            {"id": c.get("id"), "name": c.get("name"), "args": c.get("args")}
            for c in reply.invalid_tool_calls
        ]
        logprobs = reply.resolved_logprobs()
        extra: dict[str, Any] = {"finish_reason": reply.finish_reason}
        if usage is not None:
            extra["prompt_tokens"], extra["completion_tokens"] = usage
        return ChatResponse(
            message=ChatMessage(
                role=MessageRole.ASSISTANT,
                content=reply.text if text is None else text,
                additional_kwargs={"tool_calls": calls} if calls else {},
            ),
            logprobs=[
                [LogProb(token=t["token"], logprob=t["logprob"])]
                + [LogProb(token=a["token"], logprob=a["logprob"]) for a in t.get("top_logprobs", [])[1:]]
                for t in logprobs["content"]
            ]
            if logprobs
            else None,
            raw={"model": reply.model or self.model_name, "id": f"scripted-{self._script.calls}"},
            additional_kwargs=extra,
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls", [])
        if not calls and error_on_no_tool_call:
            raise ValueError("expected a tool call, got none")
        selections = []
        for call in calls:
            args = call["args"]
            if isinstance(args, str):
                args = json.loads(args)  # malformed arguments raise, as a real provider's do
            selections.append(
                ToolSelection(tool_id=call["id"] or "", tool_name=call["name"], tool_kwargs=args)
            )
        return selections

    def _prepare_chat_with_tools(  # noqa: PLR0917 - LlamaIndex's signature
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                user_msg
                if isinstance(user_msg, ChatMessage)
                else ChatMessage(role=MessageRole.USER, content=user_msg)
            )
        return {"messages": messages, **kwargs}

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        reply = self._next(messages)
        if reply.whole_delay():
            time.sleep(reply.whole_delay())
        reply.raise_error()
        return self._response(reply, messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        reply = self._next(messages)
        if reply.whole_delay():
            await asyncio.sleep(reply.whole_delay())
        reply.raise_error()
        return self._response(reply, messages)

    def _pieces(self, reply: Reply) -> list[str]:
        return tokenize(reply.text)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        reply = self._next(messages)

        def gen() -> ChatResponseGen:
            if reply.delay:
                time.sleep(reply.delay)
            reply.raise_error()
            text = ""
            pieces = self._pieces(reply)
            for i, piece in enumerate(pieces):
                if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                    raise reply.stream_error()
                if i and reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                text += piece
                last = i == len(pieces) - 1
                response = (
                    self._response(reply, messages, text)
                    if last
                    else ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))
                )
                response.delta = piece
                yield response
            if not pieces:
                yield self._response(reply, messages)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        reply = self._next(messages)

        async def gen() -> ChatResponseAsyncGen:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            reply.raise_error()
            text = ""
            pieces = self._pieces(reply)
            for i, piece in enumerate(pieces):
                if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                    raise reply.stream_error()
                if i and reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                text += piece
                last = i == len(pieces) - 1
                response = (
                    self._response(reply, messages, text)
                    if last
                    else ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))
                )
                response.delta = piece
                yield response
            if not pieces:
                yield self._response(reply, messages)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)


__all__ = ["Reply", "ScriptedLLM"]
