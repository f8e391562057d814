from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cascade_router import LogprobScorer
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

Factory = Callable[..., tuple[CascadeChatModel, list[ScriptedChatModel]]]


@pytest.fixture
def make_ladder() -> Factory:
    """``make_ladder(cheap_replies, strong_replies, threshold=0.8, **cascade_kwargs)``."""

    def make(
        cheap: list[Any], strong: list[Any], *, threshold: float = 0.8, **kwargs: Any
    ) -> tuple[CascadeChatModel, list[ScriptedChatModel]]:
        c = ScriptedChatModel(model_name="cheap-model", replies=cheap)
        s = ScriptedChatModel(model_name="strong-model", replies=strong)
        llm = CascadeChatModel(
            rungs=[
                {"model": c, "name": "cheap", "scorer": LogprobScorer(), "threshold": threshold},
                {"model": s, "name": "strong"},
            ],
            **kwargs,
        )
        return llm, [c, s]

    return make


CONFIDENT = Reply("Paris", confidence=0.95)
UNSURE = Reply("Lyon, probably", confidence=0.3)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A standard-suite class lists its expected failures and skips, each with its reason, in
    ``expected_failures`` / ``skipped_tests``; parametrized tests keep their parameters."""
    for item in items:
        cls = getattr(item, "cls", None)
        name = getattr(item, "originalname", item.name)
        reason = getattr(cls, "expected_failures", {}).get(name)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
        reason = getattr(cls, "skipped_tests", {}).get(name)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
