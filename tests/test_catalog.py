"""The capability and price catalog (issue 14): what it says, what overrides it, where it is used
(build-time scorer checks, cost bounds) and the ``cascade-router models`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_router import Cascade, ConfigError, LogprobScorer
from cascade_router.catalog import capabilities, model_info, models
from cascade_router.cli.app import app
from cascade_router.testing import Reply, ScriptedBackend


def test_a_known_model_has_price_window_and_capabilities() -> None:
    info = model_info("openai", "gpt-4o-mini")
    assert (info.input_per_mtok, info.output_per_mtok, info.context_window) == (0.15, 0.6, 128_000)
    caps = info.capabilities
    assert (caps.logprobs, caps.streaming_logprobs, caps.prefill, caps.max_output_tokens) == (
        True,
        True,
        False,
        16_384,
    )
    assert caps.source is not None


@pytest.mark.parametrize(
    ("provider", "model", "logprobs", "prefill"),
    [
        ("openai", "gpt-4o-2024-08-06", True, False),  # a dated snapshot matches its family
        ("openai", "o3-mini", False, False),  # reasoning models return no logprobs
        ("openai", "gpt-5-nano", False, False),  # nor do GPT-5's
        ("openai", "gpt-5.4", None, None),  # a later 5.x: not known here, not guessed
        ("anthropic", "claude-3-5-haiku-latest", False, True),
        ("openai", "my-fine-local-model", None, None),  # not known: not guessed
    ],
)
def test_capabilities_by_family(
    provider: str, model: str, logprobs: bool | None, prefill: bool | None
) -> None:
    caps = capabilities(provider, model)
    assert (caps.logprobs, caps.prefill) == (logprobs, prefill)


def test_settings_override_the_catalog() -> None:
    info = model_info("openai", "gpt-4o", context_window=64_000, prefill=True, input_per_mtok=1.0)
    assert (info.context_window, info.capabilities.prefill, info.input_per_mtok) == (64_000, True, 1.0)
    assert info.output_per_mtok == 10.0  # what was not overridden stays the catalog's


def test_listing_filters_by_provider_and_name() -> None:
    found = models("anthropic", "haiku")
    assert found
    assert all(m.provider == "anthropic" and "haiku" in m.model for m in found)


def test_a_logprob_scorer_on_a_model_that_returns_none_is_refused() -> None:
    o3 = {"provider": "openai", "model": "o3-mini", "api_key": "sk-test"}
    with pytest.raises(ConfigError, match=r"^rungs\[0\]\.scorer: openai:o3-mini returns no token logprobs"):
        Cascade(
            [
                {"model": o3, "scorer": LogprobScorer(), "threshold": 0.5},
                {"model": ScriptedBackend("b", ["b"])},
            ]
        )
    # The same name on a server of one's own is not the provider's model: allowed.
    local = {**o3, "base_url": "http://127.0.0.1:9/v1"}
    with Cascade(
        [
            {"model": local, "scorer": LogprobScorer(), "threshold": 0.5},
            {"model": ScriptedBackend("b", ["b"])},
        ],
        tracing=False,
    ):
        pass


def test_a_cost_limit_bounds_a_rung_by_its_catalog_max_output() -> None:
    # gpt-4o-mini states no max_tokens: its worst case is its longest answer (16,384 tokens at
    # $0.6/M, about $0.0098), which a $0.005 limit cannot cover but a $0.02 one can.
    cheap = ScriptedBackend("gpt-4o-mini", [Reply("a")])
    rungs = [
        {"model": cheap, "provider": "openai", "name": "mini"},
        {"model": ScriptedBackend("b", ["b"]), "price": 0, "name": "free"},
    ]
    cascade = Cascade(rungs, routing=[{"kind": "cost"}], tracing=False)
    assert cascade.invoke("hi", max_cost_usd=0.02).answered_by.name == "mini"
    skipped = cascade.invoke("hi", max_cost_usd=0.005).attempts[0]
    assert skipped.reason.startswith("skipped: worst-case cost $0.0098")


def test_the_models_command_prints_the_catalog() -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["models", "gpt-4o-mini", "--provider", "openai"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if " gpt-4o-mini " in line)
    assert "$0.15" in row
    assert "128,000" in row
    assert "16,384" in row
    as_json = runner.invoke(app, ["models", "claude-3-5-haiku", "--json"])
    first = json.loads(as_json.output.splitlines()[0])
    assert (first["logprobs"], first["prefill"]) == (False, True)
    nothing = runner.invoke(app, ["models", "no-such-model-anywhere"])
    assert nothing.exit_code == 1


def test_the_models_command_shows_a_ladder_with_its_own_settings(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(
        "rungs:\n"
        "  - {model: 'openai:gpt-4o-mini', name: small, context_window: 32000}\n"
        "  - {model: {provider: openai, model: gpt-4o, max_tokens: 512}, name: large,\n"
        "     price: {input_per_mtok: 2, output_per_mtok: 8}}\n"
    )
    shown = CliRunner().invoke(app, ["models", "--config", str(path), "--json"])
    assert shown.exit_code == 0, shown.output
    small, large = (json.loads(line) for line in shown.output.splitlines())
    assert (small["model"], small["context_window"]) == ("gpt-4o-mini", 32_000)
    assert (large["input_per_mtok"], large["max_output_tokens"]) == (2.0, 512)
