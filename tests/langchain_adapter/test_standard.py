"""LangChain's standard unit-test suite for chat models, run against CascadeChatModel."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from cascade_router import LogprobScorer
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel


class TestCascadeChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[CascadeChatModel]:
        return CascadeChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "rungs": [
                {
                    "model": ScriptedChatModel(model_name="cheap", replies=[Reply("hi", confidence=0.9)]),
                    "scorer": LogprobScorer(),
                    "threshold": 0.5,
                },
                {"model": ScriptedChatModel(model_name="strong", replies=["hello"])},
            ]
        }

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True
