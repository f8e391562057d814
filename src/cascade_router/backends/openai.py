"""``OpenAIBackend``: a rung on the ``openai`` SDK, for OpenAI or any OpenAI-compatible server
(vLLM, llama.cpp, Ollama...), with token logprobs requested and read.

```python
from cascade_router import Cascade, LogprobScorer
from cascade_router.backends.openai import OpenAIBackend

cascade = Cascade(
    [
        {"model": OpenAIBackend("gpt-4o-mini"), "scorer": LogprobScorer(), "threshold": 0.8},
        {"model": OpenAIBackend("gpt-4o")},
    ]
)
print(cascade.invoke("What is the capital of France?").output.text)
```
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from cascade_router.backends._sdk import SDKBackend, SDKStream, tool_calls_of
from cascade_router.chat_body import ChatBody, json_problem
from cascade_router.model_io import ModelOutput, Request, Usage
from cascade_router.openai_format import parse_logprobs


def _output(response: Any, request: Request) -> ModelOutput:
    choice = response.choices[0]
    message = choice.message
    calls, invalid = tool_calls_of(
        [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
    )
    usage = response.usage
    text = message.content or ""
    return ModelOutput(
        text=text,
        raw=response,
        logprobs=parse_logprobs(choice.logprobs),
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else None,
        model=response.model,
        finish_reason=choice.finish_reason,
        response_id=response.id,
        parse_error=json_problem(request, text, bool(calls or invalid)),
    )


class _Stream(SDKStream):
    backend: OpenAIBackend

    def open(self) -> Any:
        return self.backend.client.chat.completions.create(**self.backend.payload(self.request, stream=True))

    async def aopen(self) -> Any:
        return await self.backend.async_client.chat.completions.create(
            **self.backend.payload(self.request, stream=True)
        )

    def take(self, event: Any) -> str | None:
        self.model = event.model or self.model
        self.response_id = event.id or self.response_id
        if event.usage is not None:
            self.input_tokens, self.output_tokens = event.usage.prompt_tokens, event.usage.completion_tokens
        if not event.choices:
            return None
        choice = event.choices[0]
        self.finish_reason = choice.finish_reason or self.finish_reason
        content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
        if content:
            self.logprob_items.extend(content)
        delta = choice.delta
        for piece in (delta.tool_calls if delta else None) or ():
            function = piece.function
            self.add_call_piece(
                piece.index,
                piece.id,
                function.name if function else None,
                function.arguments if function else None,
            )
        return (delta.content if delta else None) or None


class OpenAIBackend(SDKBackend):
    """One model behind the OpenAI chat completions API.

    ``params`` are sent with every request (``max_tokens``, ``temperature``...). The API key comes
    from ``api_key`` or ``OPENAI_API_KEY`` and is kept as a ``SecretStr``: it appears in no repr,
    span or log.
    """

    key_env = "OPENAI_API_KEY"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        provider: str | None = "openai",
        logprobs: bool = True,
        top_logprobs: int = 2,
        timeout: float | None = 60.0,
        max_retries: int = 2,
        client: Any = None,
        async_client: Any = None,
        **params: Any,
    ) -> None:
        super().__init__(
            model,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            client=client,
            async_client=async_client,
        )
        self._provider = provider
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.params = params

    @property
    def provider(self) -> str | None:
        return self._provider

    @property
    def request_options(self) -> dict[str, Any]:
        return self.params

    @property
    def returns_logprobs(self) -> bool | None:
        """Whether answers carry logprobs (asked for on non-streamed calls)."""
        return self.logprobs

    def make_client(self, asynchronous: bool, **options: Any) -> Any:
        from openai import AsyncOpenAI, OpenAI

        return AsyncOpenAI(**options) if asynchronous else OpenAI(**options)

    def payload(self, request: Request, *, stream: bool = False) -> dict[str, Any]:
        native = request.native
        if isinstance(native, ChatBody):
            # A request from the OpenAI-compatible server: its messages (tool calls, content
            # parts) and settings (tools, response_format, stop...) go on as they came.
            body: dict[str, Any] = {"model": self._model, "messages": list(native.messages)}
            body.update(native.payload(self.params))
        else:
            body = {
                "model": self._model,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                **self.params,
            }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if self.logprobs:
            # On streamed calls too: each chunk then carries its tokens' logprobs, which an
            # early-abort rung scores while the answer is generated.
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        return body

    def invoke(self, request: Request) -> ModelOutput:
        return _output(self.client.chat.completions.create(**self.payload(request)), request)

    async def ainvoke(self, request: Request) -> ModelOutput:
        return _output(await self.async_client.chat.completions.create(**self.payload(request)), request)

    def stream(self, request: Request) -> _Stream:
        return _Stream(self, request)

    def astream(self, request: Request) -> _Stream:
        return _Stream(self, request)
