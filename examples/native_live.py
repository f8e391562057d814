"""A live ladder on the native SDK backends: OpenAI's gpt-4o-mini scored on its logprobs, then
Anthropic's Claude Haiku checked by a judge, then Claude Opus. No LLM framework involved.

    # requires: OPENAI_API_KEY ANTHROPIC_API_KEY
    OPENAI_API_KEY=... ANTHROPIC_API_KEY=... python examples/native_live.py
"""

from __future__ import annotations

from cascade_router import Cascade, JudgeScorer, LogprobScorer


def main() -> None:
    cascade = Cascade(
        [
            {"model": "openai:gpt-4o-mini", "scorer": LogprobScorer(), "threshold": 0.85},
            {
                "model": "anthropic:claude-haiku-4-5",
                "scorer": JudgeScorer(judge="openai:gpt-4o-mini"),
                "threshold": 0.7,
            },
            {"model": "anthropic:claude-opus-4-6"},
        ]
    )
    try:
        for question in ("What is the capital of France?", "Prove that there are infinitely many primes."):
            result = cascade.invoke(question)
            tried = " → ".join(f"{a.name} {a.decision}" for a in result.attempts)
            print(f"{question}\n  answered by {result.answered_by.name} ({tried}), ${result.cost_usd}\n")
    finally:
        cascade.close()


if __name__ == "__main__":
    main()
