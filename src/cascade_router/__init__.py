"""cascade-router: try the cheapest model first, escalate only when confidence is low.

The core is framework-neutral; LangChain and LlamaIndex adapters live in their own
distributions (``langchain-cascade-router``, ``llama-index-llms-cascade-router``).
"""

from cascade_router import _moved
from cascade_router._version import __version__
from cascade_router.attempts import Attempt, Result
from cascade_router.backend import Backend, BackendBase
from cascade_router.cascade import Cascade
from cascade_router.config import LadderConfig, LadderSettings, Rung, load_config
from cascade_router.engine import Call, Engine, Finished, LiveChunk, WholeAnswer
from cascade_router.errors import (
    CascadeError,
    CascadeExhaustedError,
    CascadeStreamError,
    ConfigError,
    RejectedAnswer,
    RungFailure,
    RungTimeoutError,
    ScorerError,
)
from cascade_router.ladder import Binding, Ladder, RungRuntime, build_ladder
from cascade_router.model_io import Message, ModelOutput, Request, TokenLogprob, ToolCall, Usage
from cascade_router.pricing import Price
from cascade_router.scorers import (
    CallableScorer,
    FirstAvailableScorer,
    JudgeScorer,
    LogprobScorer,
    Score,
    Scorer,
    ValidityScorer,
    register_scorer,
)

__all__ = [
    "Attempt",
    "Backend",
    "BackendBase",
    "Binding",
    "Call",
    "CallableScorer",
    "Cascade",
    "CascadeError",
    "CascadeExhaustedError",
    "CascadeStreamError",
    "ConfigError",
    "Engine",
    "Finished",
    "FirstAvailableScorer",
    "JudgeScorer",
    "Ladder",
    "LadderConfig",
    "LadderSettings",
    "LiveChunk",
    "LogprobScorer",
    "Message",
    "ModelOutput",
    "Price",
    "RejectedAnswer",
    "Request",
    "Result",
    "Rung",
    "RungFailure",
    "RungRuntime",
    "RungTimeoutError",
    "Score",
    "Scorer",
    "ScorerError",
    "TokenLogprob",
    "ToolCall",
    "Usage",
    "ValidityScorer",
    "WholeAnswer",
    "__version__",
    "build_ladder",
    "load_config",
    "register_scorer",
]

_moved.install()
