"""Bad configuration gets a clear error that names the field; good configuration loads from
YAML, TOML, JSON and dicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade_router import Cascade, ConfigError, LadderConfig, LogprobScorer, load_config
from cascade_router.testing import ScriptedBackend


def test_empty_ladder() -> None:
    with pytest.raises(ConfigError, match=r"^rungs: the ladder is empty"):
        Cascade([])


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan")])
def test_threshold_outside_unit_interval(threshold: float) -> None:
    with pytest.raises(ConfigError) as info:
        Cascade([{"model": ScriptedBackend("a", ["x"]), "scorer": LogprobScorer(), "threshold": threshold}])
    assert info.value.field == "rungs[0].threshold"
    assert "threshold" in str(info.value)


def test_unknown_rung_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        Cascade([{"model": ScriptedBackend("a", ["x"]), "treshold": 0.5}])
    assert info.value.field == "rungs[0].treshold"
    assert "unknown field" in str(info.value)


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"rungs": [{"model": "openai:x"}], "on_exhaust": "best"})
    assert info.value.field == "on_exhaust"


def test_unknown_scorer_kind() -> None:
    with pytest.raises(ConfigError, match=r"scorer\.kind: unknown scorer kind 'logprb'"):
        Cascade([{"model": ScriptedBackend("a", ["x"]), "scorer": {"kind": "logprb"}, "threshold": 0.5}])


def test_bad_scorer_option_is_named() -> None:
    with pytest.raises(ConfigError, match="aggregate"):
        Cascade(
            [
                {
                    "model": ScriptedBackend("a", ["x"]),
                    "scorer": {"kind": "logprob", "aggregate": "median"},
                    "threshold": 0.5,
                }
            ]
        )


def test_scorer_without_threshold_on_a_non_final_rung() -> None:
    with pytest.raises(ConfigError, match=r"^rungs\[0\]\.threshold: required"):
        Cascade(
            [
                {"model": ScriptedBackend("a", ["x"]), "scorer": LogprobScorer()},
                {"model": ScriptedBackend("b", ["y"])},
            ]
        )


def test_threshold_without_scorer() -> None:
    with pytest.raises(ConfigError, match=r"^rungs\[0\]\.threshold: given, but the rung has no scorer"):
        Cascade(
            [{"model": ScriptedBackend("a", ["x"]), "threshold": 0.5}, {"model": ScriptedBackend("b", ["y"])}]
        )


def test_duplicate_names() -> None:
    with pytest.raises(ConfigError, match="'x' is used twice"):
        Cascade(
            [
                {"model": ScriptedBackend("a", ["x"]), "name": "x"},
                {"model": ScriptedBackend("b", ["y"]), "name": "x"},
            ]
        )


def test_core_rung_model_must_be_a_backend_or_a_native_spec() -> None:
    with pytest.raises(
        ConfigError, match=r"^rungs\[0\]\.model: expected a cascade_router Backend, .* got int"
    ):
        Cascade([{"model": 42}])
    with pytest.raises(ConfigError, match=r"^rungs\[0\]\.model: expected 'provider:model'"):
        Cascade([{"model": "gpt-4.1-nano"}])
    with pytest.raises(ConfigError, match=r"^rungs\[1\]\.model: no native backend for provider 'mistral'"):
        Cascade([{"model": "openai:gpt-4.1-nano"}, {"model": "mistral:large"}])
    with pytest.raises(ConfigError, match=r"^rungs\[0\]\.model: a model mapping needs string 'provider'"):
        Cascade([{"model": {"model": "gpt-4.1-nano"}}])
    # Strings and mappings build the native backends, with their options.
    cascade = Cascade(
        [
            {"model": "anthropic:claude-haiku-4-5"},
            {
                "model": {
                    "provider": "openai",
                    "model": "gemma",
                    "base_url": "http://127.0.0.1:1/v1",
                    "max_tokens": 8,
                }
            },
        ]
    )
    assert [(b.provider, b.model) for b in cascade.backends] == [
        ("anthropic", "claude-haiku-4-5"),
        ("openai", "gemma"),
    ]
    assert cascade.backends[1].request_options == {"max_tokens": 8}  # type: ignore[attr-defined]


def test_missing_model() -> None:
    with pytest.raises(ConfigError, match="model"):
        Cascade([{"name": "x"}])


YAML = """
name: support-bot
on_exhausted: best
rungs:
  - model: openai:gpt-4.1-nano
    scorer: {kind: logprob, aggregate: min}
    threshold: 0.85
    timeout: 5
    price: {input_per_mtok: 0.05, output_per_mtok: 0.4}
  - model: anthropic:claude-opus-4-6
"""

TOML = """
name = "support-bot"
on_exhausted = "best"

[[rungs]]
model = "openai:gpt-4.1-nano"
threshold = 0.85
timeout = 5
scorer = { kind = "logprob", aggregate = "min" }
price = { input_per_mtok = 0.05, output_per_mtok = 0.4 }

[[rungs]]
model = "anthropic:claude-opus-4-6"
"""


@pytest.mark.parametrize(("suffix", "text"), [(".yaml", YAML), (".toml", TOML)])
def test_load_yaml_and_toml(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"ladder{suffix}"
    path.write_text(text)
    config = load_config(path)
    assert isinstance(config, LadderConfig)
    assert config.name == "support-bot"
    assert config.on_exhausted == "best"
    first = config.rungs[0]
    assert isinstance(first.scorer, LogprobScorer)
    assert first.scorer.aggregate == "min"
    assert (first.threshold, first.timeout) == (0.85, 5)
    assert first.price is not None
    assert first.price.output_per_mtok == 0.4
    assert config.rungs[1].model == "anthropic:claude-opus-4-6"


def test_unknown_file_format(tmp_path: Path) -> None:
    path = tmp_path / "ladder.ini"
    path.write_text("x")
    with pytest.raises(ConfigError, match="unknown config format"):
        load_config(path)


def test_from_config_dict_with_backends() -> None:
    cheap = ScriptedBackend("cheap", ["hello"])
    cascade = Cascade.from_config({"rungs": [{"model": cheap}], "name": "n"})
    assert cascade.invoke("hi").output.text == "hello"
