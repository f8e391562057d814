"""A LlamaIndex query engine's caller can see which model answered (issue 11)."""

from __future__ import annotations

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.llms.cascade_router import CascadeLLM, cascade_records
from llama_index.llms.cascade_router.testing import ScriptedLLM

from cascade_router.testing import Reply


def _llm() -> CascadeLLM:
    return CascadeLLM(
        rungs=[
            {
                "model": ScriptedLLM(model_name="cheap", replies=[Reply("Lyon?", confidence=0.2)]),
                "name": "cheap",
                "scorer": {"kind": "logprob"},
                "threshold": 0.5,
            },
            {"model": ScriptedLLM(model_name="strong", replies=["Paris."]), "name": "strong"},
        ]
    )


def _engine(llm: CascadeLLM):  # type: ignore[no-untyped-def]
    index = VectorStoreIndex.from_documents(
        [Document(text="Paris is the capital of France.")], embed_model=MockEmbedding(embed_dim=8)
    )
    return index.as_query_engine(llm=llm)


def test_a_query_engines_answer_says_which_model_gave_it() -> None:
    engine = _engine(_llm())
    with cascade_records() as records:
        response = engine.query("What is the capital of France?")
    assert "Paris" in str(response)
    assert records, "no cascade record reached the caller"
    assert records[-1]["answered_by"]["name"] == "strong"
    assert [a["decision"] for a in records[-1]["attempts"]] == ["escalate", "accept"]


def test_records_outside_the_block_are_not_collected() -> None:
    llm = _llm()
    with cascade_records() as records:
        pass
    llm.complete("q")
    assert records == []
