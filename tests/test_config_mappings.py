"""One model format for every entry point (issue 11): a mapping ``{provider, model, ...}`` builds
the framework's own client with the other keys as its parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.openai_like import OpenAILike

from cascade_router import Cascade
from langchain_cascade_router import CascadeChatModel

KEY = "sk-mapping-secret-0123456789"
URL = "http://127.0.0.1:8177/v1"
YAML = f"""
name: local
rungs:
  - model: {{provider: openai, model: gemma-3-270m, base_url: "{URL}", api_key: {KEY}, max_tokens: 8}}
"""


def test_langchain_reads_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(YAML)
    llm = CascadeChatModel.from_config(path, tracing=False)
    (model,) = llm._ladder.models
    assert isinstance(model, ChatOpenAI)
    assert model.openai_api_base == URL
    assert model.max_tokens == 8
    assert model.extra_body == {"max_tokens": 8}  # what a llama.cpp server reads
    assert KEY not in repr(llm)


def test_llamaindex_reads_the_same_mapping(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(YAML)
    llm = CascadeLLM.from_config(path)
    (model,) = llm._ladder.models
    assert isinstance(model, OpenAILike)
    assert model.api_base == URL
    assert model.max_tokens == 8
    assert model.is_chat_model
    assert KEY not in repr(llm)


def test_the_core_reads_the_same_mapping(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(YAML)
    cascade = Cascade.from_config(path)
    assert cascade.engine.rungs[0].model == "gemma-3-270m"


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"model": "x"}, "needs string 'provider' and 'model' keys"),
        ({"provider": "openai"}, "needs string 'provider' and 'model' keys"),
        ({"provider": "no-such-provider", "model": "x"}, "cannot build no-such-provider:x"),
    ],
)
def test_a_bad_mapping_names_the_field(mapping: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=r"rungs\[0\]\.model") as err:
        CascadeChatModel(rungs=[{"model": {**mapping, "api_key": KEY}}])
    assert message in str(err.value)
    assert KEY not in str(err.value)


def test_an_error_quoting_the_key_is_redacted() -> None:
    # pydantic quotes the bad value; the key registered from the mapping is redacted in it
    with pytest.raises(ValueError, match="cannot build openai:x") as err:
        CascadeChatModel(
            rungs=[{"model": {"provider": "openai", "model": "x", "api_key": KEY, "temperature": KEY}}]
        )
    assert KEY not in str(err.value)


def test_a_yaml_ladder_points_langchain_at_the_local_server(local_llm: str, tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(
        "name: local\nrungs:\n  - model: {provider: openai, model: gemma-3-270m, "
        f'base_url: "{local_llm}", api_key: not-needed, max_tokens: 6, temperature: 0}}\n'
    )
    llm = CascadeChatModel.from_config(path, tracing=False)
    message = llm.invoke("Write a long story about a dragon.")
    assert message.usage_metadata is not None
    assert 0 < message.usage_metadata["output_tokens"] <= 6, "max_tokens did not bound the answer"
