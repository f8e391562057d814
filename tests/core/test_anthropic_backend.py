"""The native anthropic-SDK backend, with Messages API exchanges replayed at the HTTP layer (respx):
answers, judged escalation, streaming, and 429 / 529 responses that fall back to the next rung."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from cascade_router import (
    Cascade,
    CascadeExhaustedError,
    ConfigError,
    FirstAvailableScorer,
    JudgeScorer,
    LiveChunk,
    LogprobScorer,
    Message,
    Request,
)
from cascade_router.backends.anthropic import AnthropicBackend

CASSETTE = json.loads((Path(__file__).parent.parent / "cassettes" / "anthropic_messages.json").read_text())
URL = "https://api.anthropic.com/v1/messages"
KEY = "sk-ant-api03-test-key-0123456789abcdef"


def replay(name: str) -> httpx2.Response:
    entry = CASSETTE[name]
    if "sse" in entry:
        text = "".join(f"event: {event}\ndata: {json.dumps(data)}\n\n" for event, data in entry["sse"])
        return httpx2.Response(entry["status"], headers=entry["headers"], text=text)
    return httpx2.Response(entry["status"], headers=entry["headers"], json=entry["body"])


class Server:
    """Answers each model's requests from its own queue of cassette entries; keeps every request."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = {model: list(names) for model, names in script.items()}
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert str(request.url) == URL
        body = json.loads(request.read())
        self.requests.append({"headers": {k.lower(): v for k, v in request.headers.items()}, "body": body})
        queue = self.script[body["model"]]
        return replay(queue.pop(0) if len(queue) > 1 else queue[0])

    def models(self) -> list[str]:
        return [r["body"]["model"] for r in self.requests]


SERVER: Server | None = None


@pytest.fixture
def anthropic_api() -> Iterator[Callable[[dict[str, list[str]]], Server]]:
    """Replays cassette entries at the HTTP layer: the SDK builds, sends, retries and parses real
    HTTP exchanges; only the transport under its HTTP client (httpx2) is the replay."""

    def install(script: dict[str, list[str]]) -> Server:
        global SERVER  # noqa: PLW0603 - one replay server per test, read by claude()
        SERVER = Server(script)
        return SERVER

    global SERVER  # noqa: PLW0603
    yield install
    SERVER = None  # a later test that forgets its replay fails instead of reusing this one


def claude(model: str, **kw: Any) -> AnthropicBackend:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert SERVER is not None, "no replay installed: this test must not reach the network"
        return SERVER(request)

    async def ahandler(request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return handler(request)

    return AnthropicBackend(
        model,
        api_key=KEY,
        max_tokens=64,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        async_http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(ahandler)),
        **kw,
    )


def judged_ladder(judge: AnthropicBackend) -> Cascade:
    return Cascade(
        [
            {"model": claude("claude-haiku-4-5"), "scorer": JudgeScorer(judge=judge), "threshold": 0.5},
            {"model": claude("claude-opus-4-6")},
        ]
    )


def test_judge_accepts_the_cheap_answer(anthropic_api: Callable[..., Server]) -> None:
    server = anthropic_api({"claude-haiku-4-5": ["message_haiku"], "claude-judge": ["judge_yes"]})
    cascade = judged_ladder(claude("claude-judge"))
    result = cascade.invoke(
        [Message("system", "Answer in one sentence."), Message("user", "What is the capital of France?")]
    )
    assert result.output.text == "The capital of France is Paris."
    assert result.answered_by.name == "claude-haiku-4-5"
    assert result.answered_by.method == "judge"
    assert result.answered_by.score == 1.0
    first = server.requests[0]
    # The Messages API takes the system prompt apart from the turns, and max_tokens always.
    assert first["body"]["system"] == "Answer in one sentence."
    assert first["body"]["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert first["body"]["max_tokens"] == 64
    # The key reaches the server as a credential (this SDK version sends it as a bearer token).
    assert KEY in (
        first["headers"].get("x-api-key"),
        first["headers"].get("authorization", "").removeprefix("Bearer "),
    )
    assert server.models() == ["claude-haiku-4-5", "claude-judge"]
    usage = result.answered_by.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (21, 10)
    # Priced from the catalog: Haiku 4.5 at $1 / $5 per million tokens, the judge unknown (None).
    assert result.answered_by.cost_usd is None or result.answered_by.cost_usd > 0


def test_judge_rejection_escalates(anthropic_api: Callable[..., Server]) -> None:
    server = anthropic_api(
        {
            "claude-haiku-4-5": ["message_haiku"],
            "claude-judge": ["judge_no"],
            "claude-opus-4-6": ["message_opus"],
        }
    )
    result = judged_ladder(claude("claude-judge")).invoke("What is the capital of France?")
    assert result.answered_by.name == "claude-opus-4-6"
    assert result.attempts[0].decision == "escalate"
    assert result.attempts[0].score == 0.0
    assert server.models() == ["claude-haiku-4-5", "claude-judge", "claude-opus-4-6"]
    assert result.cost_usd is not None
    # Opus at $5 / $25 per million: 21 in, 9 out; Haiku's 21 in, 10 out at $1 / $5; and the judge's
    # 74 in, 9 out, priced as the model its response names (Haiku 4.5).
    opus, haiku, judge = 21 * 5e-6 + 9 * 25e-6, 21 * 1e-6 + 10 * 5e-6, 74 * 1e-6 + 9 * 5e-6
    assert result.cost_usd == pytest.approx(opus + haiku + judge, rel=1e-6)


def test_tool_use_blocks_become_tool_calls(anthropic_api: Callable[..., Server]) -> None:
    anthropic_api({"claude-haiku-4-5": ["tool_use"]})
    output = claude("claude-haiku-4-5").invoke(Request.from_text("What is the weather in Paris?"))
    assert output.text == "I'll look that up."
    assert [(c.name, dict(c.args), c.id) for c in output.tool_calls] == [
        ("get_weather", {"city": "Paris"}, "toolu_01Weather000000000001")
    ]
    assert output.finish_reason == "tool_use"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_rate_limit_and_overload_fall_back(anthropic_api: Callable[..., Server], mode: str) -> None:
    server = anthropic_api(
        {
            "claude-haiku-4-5": ["rate_limited"],
            "claude-sonnet-4-6": ["overloaded"],
            "claude-opus-4-6": ["message_opus"],
        }
    )
    # The SDK retries 429 and 529 itself (once here, at the server's retry-after of 0 s); then the
    # cascade falls back.
    ladder = Cascade(
        [
            {"model": claude("claude-haiku-4-5", max_retries=1), "scorer": JudgeScorer(), "threshold": 0.5},
            {"model": claude("claude-sonnet-4-6", max_retries=1), "scorer": JudgeScorer(), "threshold": 0.5},
            {"model": claude("claude-opus-4-6", max_retries=1)},
        ]
    )
    result = (
        ladder.invoke("Capital of France?") if mode == "sync" else await ladder.ainvoke("Capital of France?")
    )
    if mode == "async":
        await ladder.aclose()
    assert result.output.text == "Paris is the capital of France."
    assert [a.decision for a in result.attempts] == ["error", "error", "accept"]
    assert "RateLimitError" in (result.attempts[0].error or "")
    assert "OverloadedError" in (result.attempts[1].error or "")
    assert server.models() == ["claude-haiku-4-5"] * 2 + ["claude-sonnet-4-6"] * 2 + ["claude-opus-4-6"]
    assert all(KEY not in (a.error or "") for a in result.attempts)


def test_all_rungs_overloaded_raises_with_every_error(anthropic_api: Callable[..., Server]) -> None:
    anthropic_api({"claude-haiku-4-5": ["overloaded"], "claude-opus-4-6": ["rate_limited"]})
    ladder = Cascade(
        [
            {"model": claude("claude-haiku-4-5", max_retries=0), "scorer": JudgeScorer(), "threshold": 0.5},
            {"model": claude("claude-opus-4-6", max_retries=0)},
        ]
    )
    with pytest.raises(CascadeExhaustedError) as caught:
        ladder.invoke("Capital of France?")
    kinds = sorted(type(e).__name__ for e in caught.value.exceptions)
    assert kinds == ["OverloadedError", "RateLimitError"]
    assert KEY not in str(caught.value)


async def test_streams_the_final_rung(anthropic_api: Callable[..., Server]) -> None:
    anthropic_api({"claude-haiku-4-5": ["overloaded"], "claude-opus-4-6": ["stream_opus"]})
    ladder = Cascade(
        [
            {"model": claude("claude-haiku-4-5", max_retries=0), "scorer": JudgeScorer(), "threshold": 0.5},
            {"model": claude("claude-opus-4-6")},
        ]
    )
    for events in (list(ladder.stream("Capital?")), [e async for e in ladder.astream("Capital?")]):
        chunks = [e.native for e in events if isinstance(e, LiveChunk)]
        assert chunks == ["Paris is", " the capital", " of France."]
        result = events[-1].result  # type: ignore[union-attr]
        assert result.answered_by.name == "claude-opus-4-6"
        assert result.answered_by.usage is not None
        assert (result.answered_by.usage.input_tokens, result.answered_by.usage.output_tokens) == (21, 9)
        assert result.output.text == "Paris is the capital of France."
    await ladder.aclose()
    ladder.close()


def test_logprob_scorer_on_anthropic_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"rungs\[0\]\.scorer.*returns no token logprobs"):
        Cascade(
            [
                {"model": claude("claude-haiku-4-5"), "scorer": LogprobScorer(), "threshold": 0.8},
                {"model": claude("o")},
            ]
        )
    with pytest.raises(ConfigError, match="returns no token logprobs"):
        Cascade.from_config(
            {
                "rungs": [
                    {"model": "anthropic:claude-haiku-4-5", "scorer": {"kind": "logprob"}, "threshold": 0.8},
                    {"model": "anthropic:claude-opus-4-6"},
                ]
            }
        )
    # Falling through to a judge when logprobs are missing is fine.
    Cascade(
        [
            {
                "model": claude("claude-haiku-4-5"),
                "scorer": FirstAvailableScorer(scorers=[LogprobScorer(), JudgeScorer()]),
                "threshold": 0.8,
            },
            {"model": claude("claude-opus-4-6")},
        ]
    )


def test_key_never_in_repr_or_config_errors() -> None:
    backend = claude("claude-haiku-4-5")
    assert KEY not in repr(backend)
    assert KEY not in repr(vars(backend))
