"""A cheap -> strong ladder on scripted models: who answered each request, why, and the cost.

Runs offline with no API key. The scripted models stand in for gpt-4o-mini and gpt-4o and
are priced with those models' catalog prices (genai-prices), so the dollar figures are what
these token counts would cost.

    python examples/offline_ladder.py
"""

from __future__ import annotations

from cascade_router import LogprobScorer
from cascade_router.model_io import Usage
from cascade_router.pricing import cost_usd
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

QUESTIONS = [
    "What is the capital of France?",
    "What is 17 * 23?",
    "Summarise the plot of Hamlet in one sentence.",
    "Which is larger, 9.11 or 9.9?",
    "Translate 'good morning' into Spanish.",
]

# What the cheap model says to each question, and how sure its tokens are.
CHEAP = [
    Reply("Paris.", confidence=0.97, usage=(14, 3)),
    Reply("17 * 23 = 391.", confidence=0.93, usage=(14, 9)),
    Reply("A prince avenges his father and everyone dies.", confidence=0.62, usage=(18, 10)),
    Reply(error=ConnectionError("429 Too Many Requests")),
    Reply("Buenos días.", confidence=0.95, usage=(16, 5)),
]
STRONG = [
    Reply(
        "Prince Hamlet feigns madness to avenge his father's murder by his uncle, and the "
        "revenge destroys the whole Danish court.",
        usage=(18, 27),
    ),
    Reply("9.9 is larger than 9.11.", usage=(15, 9)),
]


def main() -> None:
    cheap = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", replies=CHEAP, cycle=False)
    strong = ScriptedChatModel(model_name="gpt-4o", provider="openai", replies=STRONG, cycle=False)
    llm = CascadeChatModel(
        rungs=[
            {"model": cheap, "name": "mini", "scorer": LogprobScorer(), "threshold": 0.85},
            {"model": strong, "name": "4o"},
        ]
    )
    print(f"{'question':<46} {'answered by':<12} {'tried':<12} {'cost $':>10}  why")
    total = strong_only = 0.0
    unknown = 0
    for question in QUESTIONS:
        message = llm.invoke(question)
        meta = message.response_metadata["cascade"]
        tried = ">".join(a["name"] for a in meta["attempts"])
        why = "; ".join(f"{a['name']}: {a['reason']}" for a in meta["attempts"])
        answered_by = message.response_metadata["model_name"]
        # A request whose rung failed costs "unknown": the failed call may have been billed.
        cost = meta["cost_usd"]
        shown = "unknown" if cost is None else f"{cost:.6f}"
        print(f"{question[:45]:<46} {answered_by:<12} {tried:<12} {shown:>10}  {why}")
        if cost is None:
            unknown += 1
            cost = sum(a["cost_usd"] or 0.0 for a in meta["attempts"])  # the part that is known
        total += cost
        # gpt-4o alone, for the same prompt and an answer as long as the one given.
        answer = meta["attempts"][-1]
        strong_only += (
            cost_usd(
                Usage(answer["input_tokens"], answer["output_tokens"]), provider="openai", model="gpt-4o"
            )
            or 0.0
        )
    note = f" (+ {unknown} failed call(s) of unknown cost)" if unknown else ""
    print(f"\ncascade total ${total:.6f}{note}  vs  gpt-4o for every request ${strong_only:.6f}")


if __name__ == "__main__":
    main()
