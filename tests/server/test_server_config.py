"""The server's config file: named ladders or one ladder, mistakes named by field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade_router.errors import ConfigError
from cascade_router.server import load_server_config

SCRIPTED = {"provider": "scripted", "model": "m"}


def test_a_single_ladder_file_is_served_under_its_name(tmp_path: Path) -> None:
    (tmp_path / "ladder.yaml").write_text(
        "name: support-bot\nrungs:\n  - model: {provider: scripted, model: m}\n"
    )
    config = load_server_config(tmp_path / "ladder.yaml")
    assert list(config.ladders) == ["support-bot"]
    assert config.ladders["support-bot"].name == "support-bot"


def test_ladders_take_their_key_as_name() -> None:
    config = load_server_config(
        {"ladders": {"a": {"rungs": [{"model": SCRIPTED}]}, "b/v2": {"rungs": [{"model": SCRIPTED}]}}}
    )
    assert [c.name for c in config.ladders.values()] == ["a", "b/v2"]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            {"ladders": {"a": {"rungs": [{"model": SCRIPTED, "threshold": 3}]}}},
            "ladders.a.rungs[0].threshold",
            "less",
        ),
        ({"ladders": {"a": {"rungs": []}}}, "ladders.a.rungs", ""),
        ({"ladders": {"a": "nope"}}, "ladders.a", "ladder mapping"),
        ({"ladders": {"bad name!": {"rungs": [{"model": SCRIPTED}]}}}, "ladders", "usable model name"),
        ({"ladders": {}}, "ladders", "at least 1"),
        ({"ladders": {"a": {"rungs": [{"model": SCRIPTED}]}}, "max_body_bytes": 10}, "max_body_bytes", ""),
        ({"ladders": {"a": {"rungs": [{"model": SCRIPTED}]}}, "stat": "redis://x"}, "stat", "unknown field"),
        ({"rungs": [{"model": SCRIPTED}], "ladders": {}}, "config", "not both"),
    ],
)
def test_mistakes_name_their_field(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_server_config(data)
    assert caught.value.field == field
    assert words in caught.value.problem


def test_a_file_mistake_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(
        "ladders:\n  a:\n    rungs:\n      - model: {provider: scripted, model: m}\n        threshold: 2\n"
    )
    with pytest.raises(ConfigError, match=r"server\.yaml: ladders\.a\.rungs\[0\]\.threshold"):
        load_server_config(path)


def test_scorer_files_are_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "server.yaml"
    path.write_text(
        "ladders:\n  a:\n    rungs:\n"
        "      - model: {provider: scripted, model: m}\n"
        "        scorer: {kind: learned, path: scorer.json}\n"
        "        threshold: 0.5\n"
        "      - {model: {provider: scripted, model: n}}\n"
    )
    with pytest.raises((ConfigError, FileNotFoundError)) as caught:  # the file is looked for beside it
        load_server_config(path)
    assert str(tmp_path / "sub" / "scorer.json") in str(caught.value)


def test_store_passwords_are_not_in_the_config_repr() -> None:
    url = "postgresql+psycopg://cascade:hunter2-secret@db:5432/cascade"
    config = load_server_config(
        {
            "state": "redis://:redis-secret@cache:6379/0",
            "keys": url,
            "decision_log": url,
            "ladders": {"a": {"rungs": [{"model": SCRIPTED}]}},
        }
    )
    shown = repr(config) + str(config) + config.model_dump_json()
    assert "hunter2-secret" not in shown
    assert "redis-secret" not in shown
    assert "db:5432" in shown
