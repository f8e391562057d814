"""One policy: the same scripted ladder gives identical attempts through every entry point."""

from __future__ import annotations

from typing import Any

import pytest

from cascade_router import JudgeScorer, LogprobScorer, Price
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

TIMING = ("latency_s", "ttft_s")


def build() -> CascadeChatModel:
    price = Price(input_per_mtok=1.0, output_per_mtok=3.0)
    return CascadeChatModel(
        rungs=[
            {
                "model": ScriptedChatModel(model_name="a", replies=[ConnectionError("503")]),
                "price": price,
                "scorer": LogprobScorer(),
                "threshold": 0.5,
                "name": "a",
            },
            {
                "model": ScriptedChatModel(model_name="b", replies=[Reply("maybe 5", confidence=0.4)]),
                "price": price,
                "scorer": LogprobScorer(aggregate="min"),
                "threshold": 0.5,
                "name": "b",
            },
            {
                "model": ScriptedChatModel(model_name="c", replies=[Reply("four", usage=(30, 2))]),
                "price": price,
                "scorer": JudgeScorer(judge=ScriptedChatModel(model_name="j", replies=["No"])),
                "threshold": 0.5,
                "name": "c",
            },
            {
                "model": ScriptedChatModel(model_name="d", replies=["4, certainly"]),
                "price": price,
                "name": "d",
            },
        ]
    )


def untimed(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k not in TIMING} for a in meta["attempts"]]


async def run(mode: str) -> tuple[list[dict[str, Any]], str]:
    llm = build()
    if mode == "invoke":
        msg = llm.invoke("2+2?")
    elif mode == "ainvoke":
        msg = await llm.ainvoke("2+2?")
    else:
        chunks = list(llm.stream("2+2?")) if mode == "stream" else [c async for c in llm.astream("2+2?")]
        msg = chunks[0]
        for c in chunks[1:]:
            msg += c
    return untimed(msg.response_metadata["cascade"]), str(msg.content)


@pytest.mark.parametrize("mode", ["ainvoke", "stream", "astream"])
async def test_identical_attempts(mode: str) -> None:
    reference, ref_text = await run("invoke")
    assert [a["decision"] for a in reference] == ["error", "escalate", "escalate", "accept"]
    got, text = await run(mode)
    assert got == reference
    assert text == ref_text == "4, certainly"
