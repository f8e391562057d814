"""Token logprobs are read from the provider's objects only when a scorer asks for them."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from cascade_router import openai_format
from cascade_router.model_io import TokenLogprob, TokenLogprobs
from cascade_router.openai_format import parse_logprobs
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router._convert import to_output
from langchain_cascade_router.testing import ScriptedChatModel


def _content(n: int) -> list[dict[str, Any]]:
    return [
        {"token": f"t{i}", "logprob": -0.01, "top_logprobs": [{"token": f"t{i}", "logprob": -0.01}]}
        for i in range(n)
    ]


@pytest.fixture
def parsed_items(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every provider item parsed into a token, in order."""
    seen: list[Any] = []
    real = openai_format._token

    def counting(item: Any) -> TokenLogprob:
        seen.append(item)
        return real(item)

    monkeypatch.setattr(openai_format, "_token", counting)
    return seen


def test_an_answer_nobody_scores_by_logprobs_never_reads_them(parsed_items: list[Any]) -> None:
    message = AIMessage("ok", response_metadata={"logprobs": {"content": _content(500)}})
    output = to_output(message)
    assert isinstance(output.logprobs, TokenLogprobs)
    assert parsed_items == []
    llm = CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(model_name="cheap", replies=[Reply("4", confidence=0.9)]),
                "scorer": {"kind": "validity"},
                "threshold": 0.5,
            },
            {"model": ScriptedChatModel(model_name="strong", replies=[Reply("4")])},
        ],
        tracing=False,
    )
    assert llm.invoke("2+2?").response_metadata["cascade"]["answered_by"]["rung"] == 0
    assert parsed_items == [], "a validity-scored rung's logprobs were parsed"


def test_a_logprob_scorer_reads_every_token_once(parsed_items: list[Any]) -> None:
    llm = CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(model_name="cheap", replies=[Reply("four", confidence=0.9)]),
                "scorer": {"kind": "logprob"},
                "threshold": 0.5,
            },
            {"model": ScriptedChatModel(model_name="strong", replies=[Reply("4")])},
        ],
        tracing=False,
    )
    meta = llm.invoke("2+2?").response_metadata["cascade"]
    assert meta["answered_by"]["rung"] == 0
    assert meta["attempts"][0]["method"] == "logprob"
    tokens = [item["token"] for item in parsed_items]
    assert tokens, "the logprob scorer read no token"
    assert len(tokens) == len(set(tokens)), f"a token was parsed twice: {tokens}"


def test_lazy_logprobs_equal_the_eager_tuple_and_survive_pickle() -> None:
    lazy = parse_logprobs({"content": _content(3)})
    assert lazy is not None
    eager = tuple(openai_format._token(item) for item in _content(3))
    assert lazy == eager
    assert lazy[1] == eager[1]
    assert lazy[:2] == eager[:2]
    assert len(lazy) == 3
    restored = pickle.loads(pickle.dumps(lazy))
    assert restored == eager
    assert parse_logprobs(None) is None
    assert parse_logprobs({"content": None}) is None
    assert parse_logprobs({"content": []}) == ()


def test_a_later_change_to_the_providers_list_does_not_change_the_answer() -> None:
    content = _content(2)
    lazy = parse_logprobs({"content": content})
    content.append({"token": "late", "logprob": -1.0})
    assert lazy is not None
    assert [t.token for t in lazy] == ["t0", "t1"]
