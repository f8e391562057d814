"""``AnthropicBackend``: a rung on the ``anthropic`` SDK (the Messages API).

Anthropic returns no token logprobs, so a rung on it needs a scorer that does not read them: a
judge, a validity check, a learned or a callable scorer. A ``logprob`` scorer on it is refused
when the ladder is built, instead of escalating every request for a missing signal.

```python
from cascade_router import Cascade, JudgeScorer
from cascade_router.backends.anthropic import AnthropicBackend

cascade = Cascade(
    [
        {"model": AnthropicBackend("claude-haiku-4-5"), "scorer": JudgeScorer(), "threshold": 0.7},
        {"model": AnthropicBackend("claude-opus-4-6")},
    ]
)
```

The SDK retries rate limits (429) and overload (529) itself, ``max_retries`` times, honouring the
server's ``retry-after``; when those retries are spent the cascade falls back to the next rung.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from cascade_router.backends._sdk import SDKBackend, SDKStream
from cascade_router.chat_body import ChatBody, anthropic_body, json_problem
from cascade_router.model_io import ModelOutput, Request, ToolCall, Usage


def _output(response: Any, request: Request) -> ModelOutput:
    texts: list[str] = []
    calls: list[ToolCall] = []
    invalid: list[str] = []
    for block in response.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            if isinstance(block.input, dict):
                calls.append(ToolCall(block.name, block.input, block.id))
            else:
                invalid.append(f"{block.name}: input is not a JSON object")
    usage = response.usage
    return ModelOutput(
        text="".join(texts),
        raw=response,
        logprobs=None,  # the Messages API has none
        tool_calls=tuple(calls),
        invalid_tool_calls=tuple(invalid),
        usage=Usage(usage.input_tokens, usage.output_tokens) if usage else None,
        model=response.model,
        finish_reason=response.stop_reason,
        response_id=response.id,
        parse_error=json_problem(request, "".join(texts), bool(calls or invalid)),
    )


class _Stream(SDKStream):
    """Reads the Messages API's server-sent events: text deltas, then usage and stop reason."""

    backend: AnthropicBackend

    def open(self) -> Any:
        return self.backend.client.messages.create(**self.backend.payload(self.request), stream=True)

    async def aopen(self) -> Any:
        return await self.backend.async_client.messages.create(
            **self.backend.payload(self.request), stream=True
        )

    def take(self, event: Any) -> str | None:
        match event.type:
            case "message_start":
                self.model = event.message.model
                self.response_id = event.message.id
                self.input_tokens = event.message.usage.input_tokens
                self.output_tokens = event.message.usage.output_tokens
            case "content_block_delta" if event.delta.type == "text_delta":
                return str(event.delta.text) or None
            case "content_block_start" if event.content_block.type == "tool_use":
                self.add_call_piece(event.index, event.content_block.id, event.content_block.name, None)
            case "content_block_delta" if event.delta.type == "input_json_delta":
                self.add_call_piece(event.index, None, None, event.delta.partial_json)
            case "message_delta":
                self.finish_reason = event.delta.stop_reason or self.finish_reason
                if event.usage is not None:
                    self.output_tokens = event.usage.output_tokens
            case _:
                pass
        return None


class AnthropicBackend(SDKBackend):
    """One Claude model behind the Messages API.

    ``max_tokens`` is required by the API, so it has a default here. ``params`` are sent with every
    request (``temperature``, ``top_p``...). The key comes from ``api_key`` or ``ANTHROPIC_API_KEY``
    and is kept as a ``SecretStr``: it appears in no repr, span or log.
    """

    key_env = "ANTHROPIC_API_KEY"

    @property
    def returns_logprobs(self) -> bool | None:
        """Never: a logprob scorer on this rung is refused when the ladder is built."""
        return False

    def __init__(
        self,
        model: str,
        *,
        max_tokens: int = 1024,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        timeout: float | None = 60.0,
        max_retries: int = 2,
        client: Any = None,
        async_client: Any = None,
        http_client: Any = None,
        async_http_client: Any = None,
        **params: Any,
    ) -> None:
        """``client`` / ``async_client``: ready SDK clients to use instead of making them.
        ``http_client`` / ``async_http_client``: the HTTP clients the SDK clients it makes should
        use (proxies, custom transports, replayed traffic in tests)."""
        super().__init__(
            model,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            client=client,
            async_client=async_client,
        )
        self._http = (http_client, async_http_client)
        self.max_tokens = max_tokens
        self.params = params

    @property
    def provider(self) -> str:
        return "anthropic"

    @property
    def request_options(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, **self.params}

    def make_client(self, asynchronous: bool, **options: Any) -> Any:
        from anthropic import Anthropic, AsyncAnthropic

        if asynchronous:
            return AsyncAnthropic(**options, http_client=self._http[1])
        return Anthropic(**options, http_client=self._http[0])

    def payload(self, request: Request) -> dict[str, Any]:
        if isinstance(request.native, ChatBody):
            # A request from the OpenAI-compatible server: its tools, tool turns and settings
            # in the Messages API's terms (what has no equivalent raises, naming it).
            return anthropic_body(request.native, self._model, self.max_tokens, self.params)
        # The Messages API takes the system prompt apart from the turns, and only user and
        # assistant turns; a plain-text tool result is passed on as the user's turn.
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        turns = [
            {"role": "assistant" if m.role == "assistant" else "user", "content": m.content}
            for m in request.messages
            if m.role != "system"
        ]
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": self.max_tokens,
            "messages": turns,
            **self.params,
        }
        if system:
            body["system"] = system
        return body

    def invoke(self, request: Request) -> ModelOutput:
        return _output(self.client.messages.create(**self.payload(request)), request)

    async def ainvoke(self, request: Request) -> ModelOutput:
        return _output(await self.async_client.messages.create(**self.payload(request)), request)

    def stream(self, request: Request) -> _Stream:
        return _Stream(self, request)

    def astream(self, request: Request) -> _Stream:
        return _Stream(self, request)
