"""LangChain integration of cascade-router.

- ``CascadeChatModel``: a drop-in chat model that is a ladder of chat models.
- ``CascadeMiddleware``: the same ladder for every model call of a ``create_agent`` agent.
"""

from cascade_router import (
    CallableScorer,
    CascadeExhaustedError,
    CascadeStreamError,
    FirstAvailableScorer,
    JudgeScorer,
    LogprobScorer,
    Price,
    Rung,
    ValidityScorer,
)
from langchain_cascade_router.chat_model import CascadeChatModel
from langchain_cascade_router.middleware import CascadeMiddleware

__all__ = [
    "CallableScorer",
    "CascadeChatModel",
    "CascadeExhaustedError",
    "CascadeMiddleware",
    "CascadeStreamError",
    "FirstAvailableScorer",
    "JudgeScorer",
    "LogprobScorer",
    "Price",
    "Rung",
    "ValidityScorer",
]
