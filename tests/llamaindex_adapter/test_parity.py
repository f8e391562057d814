"""One policy serves every entry point: the same scripted ladder gives identical attempts through
LangChain's CascadeChatModel, LlamaIndex's CascadeLLM and the core Cascade."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.cascade_router.testing import ScriptedLLM

from cascade_router import Cascade, JudgeScorer, LogprobScorer, Price
from cascade_router.testing import Reply, ScriptedBackend
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

PRICE = Price(input_per_mtok=1.0, output_per_mtok=3.0)


def script() -> list[tuple[str, list[Any], dict[str, Any]]]:
    return [
        ("a", [ConnectionError("503")], {"scorer": LogprobScorer(), "threshold": 0.5}),
        (
            "b",
            [Reply("maybe 5", confidence=0.4, usage=(12, 3))],
            {"scorer": LogprobScorer(aggregate="min"), "threshold": 0.5},
        ),
        ("c", [Reply("four", usage=(30, 2))], {"scorer": "judge", "threshold": 0.5}),
        ("d", [Reply("4, certainly", usage=(12, 4))], {}),
    ]


def rungs(fake: Any) -> list[dict[str, Any]]:
    out = []
    for name, replies, scripted in script():
        rule = dict(scripted)
        if rule.get("scorer") == "judge":
            rule["scorer"] = JudgeScorer(judge=fake(model_name="j", replies=[Reply("No", usage=(20, 1))]))
        out.append({"model": fake(model_name=name, replies=replies), "name": name, "price": PRICE, **rule})
    return out


def untimed(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k not in ("latency_s", "ttft_s", "provider")} for a in attempts]


def test_same_attempts_through_langchain_and_llamaindex() -> None:
    lc = CascadeChatModel(rungs=rungs(ScriptedChatModel)).invoke("2+2?")
    li = CascadeLLM(rungs=rungs(ScriptedLLM)).chat([ChatMessage(role=MessageRole.USER, content="2+2?")])
    lc_attempts = untimed(lc.response_metadata["cascade"]["attempts"])
    li_attempts = untimed(li.additional_kwargs["cascade"]["attempts"])
    assert [a["decision"] for a in lc_attempts] == ["error", "escalate", "escalate", "accept"]
    assert li_attempts == lc_attempts
    assert li.message.content == lc.content == "4, certainly"

    def backend(model_name: str, replies: list[Any]) -> ScriptedBackend:
        return ScriptedBackend(model_name, replies)

    core = Cascade(rungs(backend)).invoke("2+2?")
    assert untimed([a.to_dict() for a in core.attempts]) == lc_attempts
    assert core.output.text == "4, certainly"
