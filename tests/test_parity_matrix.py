"""Every rung option means the same on every entry point and in every mode (issue 10): the same
scripted ladder gives the same decisions, reasons and answer through the core ``Cascade``,
LangChain's ``CascadeChatModel`` and LlamaIndex's ``CascadeLLM``, in invoke, ainvoke, stream and
astream."""

from __future__ import annotations

from typing import Any

import pytest

from cascade_router import JudgeScorer, LogprobScorer
from cascade_router.testing import Reply
from tests.entrypoints import KINDS, MODES, answer, build

STRONG = {"replies": [Reply("Paris is the capital")]}
TOOL_CALL = {"name": "lookup", "args": {"city": "Paris"}, "id": "call_1"}

CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any], list[tuple[str, str]], str]] = {
    # name: (rungs, ladder settings, expected (decision, reason prefix) per attempt, answer)
    "retries on the rung": (
        [
            {
                "replies": [ConnectionError("503"), Reply("cheap", confidence=0.9)],
                "scorer": LogprobScorer(),
                "threshold": 0.5,
                "max_retries": 1,
            },
            STRONG,
        ],
        {},
        # The failed try is an attempt of its own, with its error class and the backoff.
        [("error", "error (retryable): ConnectionError; retry in"), ("accept", "score 0.9")],
        "cheap",
    ),
    "retries from the ladder": (
        [
            {
                "replies": [ConnectionError("503"), Reply("cheap", confidence=0.9)],
                "scorer": LogprobScorer(),
                "threshold": 0.5,
            },
            STRONG,
        ],
        {"max_retries": 1},
        # The failed try is an attempt of its own, with its error class and the backoff.
        [("error", "error (retryable): ConnectionError; retry in"), ("accept", "score 0.9")],
        "cheap",
    ),
    "timeout": (
        [{"replies": [Reply("late", delay=2)], "timeout": 0.1}, STRONG],
        {},
        [("error", "error (timeout): RungTimeoutError"), ("accept", "final rung")],
        "Paris is the capital",
    ),
    "ladder timeout, rung switches it off": (
        [{"replies": [Reply("late but fine", delay=0.3)], "timeout": None}, STRONG],
        {"timeout": 0.05},
        [("accept", "no scorer")],
        "late but fine",
    ),
    "on_missing accept": (
        [
            {
                "replies": [Reply("no logprobs")],
                "scorer": LogprobScorer(),
                "threshold": 0.5,
                "on_missing": "accept",
            },
            STRONG,
        ],
        {},
        [("accept", "missing signal accepted: no logprobs returned")],
        "no logprobs",
    ),
    "on_missing escalate": (
        [{"replies": [Reply("no logprobs")], "scorer": LogprobScorer(), "threshold": 0.5}, STRONG],
        {},
        [("escalate", "missing signal: no logprobs returned"), ("accept", "final rung")],
        "Paris is the capital",
    ),
    "invalid answer": (
        [{"replies": [Reply("")], "scorer": LogprobScorer(), "threshold": 0.5}, STRONG],
        {},
        [("escalate", "invalid: empty answer"), ("accept", "final rung")],
        "Paris is the capital",
    ),
    "self-check judge rejects": (
        [{"replies": [Reply("Lyon"), Reply("No")], "scorer": JudgeScorer(), "threshold": 0.5}, STRONG],
        {},
        [("escalate", "score 0.000 < threshold 0.5"), ("accept", "final rung")],
        "Paris is the capital",
    ),
    "on_tool_call accept": (
        [
            {
                "replies": [Reply(tool_calls=[TOOL_CALL], confidence=0.1)],
                "scorer": LogprobScorer(),
                "threshold": 0.9,
            },
            STRONG,
        ],
        {},
        [("accept", "valid tool call")],
        "",
    ),
    "on_tool_call escalate": (
        [
            {
                "replies": [Reply(tool_calls=[TOOL_CALL], confidence=0.99)],
                "scorer": LogprobScorer(),
                "threshold": 0.5,
                "on_tool_call": "escalate",
            },
            STRONG,
        ],
        {},
        [("escalate", "tool call (on_tool_call=escalate)"), ("accept", "final rung")],
        "Paris is the capital",
    ),
    "on_tool_call score": (
        [
            {
                "replies": [Reply(tool_calls=[TOOL_CALL], confidence=0.2)],
                "scorer": LogprobScorer(),
                "threshold": 0.5,
                "on_tool_call": "score",
            },
            STRONG,
        ],
        {},
        [("escalate", "score 0.2"), ("accept", "final rung")],
        "Paris is the capital",
    ),
    "best usable answer": (
        [
            {"replies": [Reply("")], "scorer": LogprobScorer(), "threshold": 0.9},
            {"replies": [Reply("unsure", confidence=0.3)], "scorer": LogprobScorer(), "threshold": 0.9},
        ],
        {"accept_last": False, "on_exhausted": "best"},
        [("escalate", "invalid: empty answer"), ("escalate", "score 0.3")],
        "unsure",
    ),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(CASES))
async def test_every_option_means_the_same_everywhere(case: str, mode: str, kind: str) -> None:
    rungs, settings, expected, text = CASES[case]
    entry, _ = build(kind, [dict(r) for r in rungs], **settings)
    got_text, attempts = await answer(entry, mode)
    got = [(a["decision"], a["reason"]) for a in attempts]
    assert len(got) == len(expected), got
    for (decision, reason), (want_decision, want_reason) in zip(got, expected, strict=True):
        assert decision == want_decision, got
        assert reason.startswith(want_reason), got
    assert got_text.startswith(text)
