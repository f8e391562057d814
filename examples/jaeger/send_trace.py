"""Send traced cascade requests to Jaeger (or any OTLP receiver), offline, with scripted models.

    docker compose -f examples/jaeger/docker-compose.yml up -d
    python examples/jaeger/send_trace.py
    # open http://localhost:16686, service "cascade-router-demo"

The standard OTEL_EXPORTER_OTLP_* variables choose where the spans go (default: OTLP/HTTP on
localhost:4318). With no receiver running the requests still succeed; the exporter's failure is
logged and nothing else happens, which is the point.
"""

from __future__ import annotations

import os

from cascade_router import JudgeScorer, LogprobScorer
from cascade_router.observability.otel import configure_tracing
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

# Do not wait long for a collector that is not there.
os.environ.setdefault("OTEL_EXPORTER_OTLP_TIMEOUT", "3")


def main() -> None:
    provider = configure_tracing("cascade-router-demo")
    judge = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", replies=["No", "Yes"])
    llm = CascadeChatModel(
        name="support-bot",
        rungs=[
            {
                "model": ScriptedChatModel(
                    model_name="gpt-4o-mini",
                    provider="openai",
                    replies=[
                        Reply("Paris.", confidence=0.97),
                        Reply("Maybe 12?", confidence=0.41),
                        Reply("Yes."),
                    ],
                ),
                "name": "mini",
                "scorer": LogprobScorer(),
                "threshold": 0.85,
            },
            {
                "model": ScriptedChatModel(
                    model_name="claude-haiku-4-5",
                    provider="anthropic",
                    replies=["It is 14.", ConnectionError("529")],
                ),
                "name": "haiku",
                "scorer": JudgeScorer(judge=judge),
                "threshold": 0.7,
            },
            {
                "model": ScriptedChatModel(
                    model_name="claude-opus-4-6", provider="anthropic", replies=["Yes, it is."]
                ),
                "name": "opus",
            },
        ],
    )
    for question in ["Capital of France?", "What is 2 * 7?", "Is the sky blue?"]:
        message = llm.invoke(question)
        meta = message.response_metadata["cascade"]
        path = " > ".join(f"{a['name']}:{a['decision']}" for a in meta["attempts"])
        print(f"{question:<22} answered by {message.response_metadata['model_name']:<16} {path}")
        print(f"{'':<22} trace {meta['trace_id']}")
    provider.shutdown()  # flush the spans before exiting
    print("\nOpen http://localhost:16686 and pick service 'cascade-router-demo'.")


if __name__ == "__main__":
    main()
