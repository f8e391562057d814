"""The threshold loop end to end on a real model (issue 12): ``record`` a ladder on the local
llama.cpp server (real token logprobs), ``label --by reference``, ``calibrate --guaranteed`` on
one half and report on the other, then ``eval`` the calibrated ladder.

The model is Gemma 3 270M, a base model that mostly continues its prompt, so the prompts are
ones it answers by echoing: a bare code (the short rung's 5 tokens hold it) or a labelled one
(5 tokens cut it off, the long rung's 24 hold it)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml
from typer.testing import CliRunner

from cascade_router.cli.app import app
from cascade_router.evaluation.datasets import Dataset

N = 40


def _ladder(url: str) -> dict[str, object]:
    common = {
        "provider": "openai",
        "model": "gemma-3-270m",
        "base_url": url,
        "api_key": "sk-local-not-a-secret",
    }
    return {
        "name": "local-gemma",
        "rungs": [
            {
                "name": "gemma-short",
                "model": {**common, "max_tokens": 5, "temperature": 0},
                "price": 0,
                "scorer": {"kind": "logprob", "aggregate": "mean"},
                "threshold": 0.5,
            },
            {
                "name": "gemma-long",
                "model": {**common, "max_tokens": 24, "temperature": 0, "logprobs": False},
                "price": 0,
            },
        ],
    }


def test_record_label_calibrate_eval_on_a_real_server(local_llm: str, tmp_path: Path) -> None:
    rng = random.Random(12)
    prompts = tmp_path / "prompts.jsonl"
    with prompts.open("w") as f:
        for i in range(N):
            code = rng.randint(1000, 9999)
            text = str(code) if i % 2 else f"Code: {code}"
            f.write(json.dumps({"id": f"c{i}", "request": text, "reference": str(code)}) + "\n")
    config = tmp_path / "ladder.yaml"
    config.write_text(yaml.safe_dump(_ladder(local_llm), sort_keys=False))
    answers = tmp_path / "answers.jsonl"
    runner = CliRunner()

    recorded = runner.invoke(
        app,
        [
            "record",
            "--config",
            str(config),
            "--prompts",
            str(prompts),
            "--out",
            str(answers),
            "--concurrency",
            "1",
        ],
    )
    assert recorded.exit_code == 0, recorded.output
    assert f"{N} items with every rung's answer, 0 incomplete" in " ".join(recorded.output.split())
    data = Dataset.load(answers)
    assert data.models == ["gemma-long", "gemma-short"]
    for item in data:
        short = item.answers["gemma-short"]
        assert short.logprobs is not None, "the scored rung's real logprobs were not recorded"
        assert short.score is not None
        assert 0.0 < short.score <= 1.0
        assert short.output_tokens is not None
        assert 0 < short.output_tokens <= 5
        assert item.answers["gemma-long"].logprobs is None  # not asked for
    again = runner.invoke(
        app, ["record", "--config", str(config), "--prompts", str(prompts), "--out", str(answers)]
    )
    assert "0 model calls" in " ".join(again.output.split())  # all from the cache

    labelled = runner.invoke(app, ["label", str(answers), "--by", "reference:regex", "--pattern", r"(\d{4})"])
    assert labelled.exit_code == 0, labelled.output
    assert f"labelled {2 * N} answers" in " ".join(labelled.output.split())
    data = Dataset.load(answers)
    data.require_labels(["gemma-short", "gemma-long"])
    short_right = sum(data.quality(i.id, "gemma-short") for i in data) / N
    long_right = sum(data.quality(i.id, "gemma-long") for i in data) / N
    assert long_right > short_right  # the longer budget holds the code more often

    calibrated, report = tmp_path / "calibrated.yaml", tmp_path / "report.json"
    chosen = runner.invoke(
        app,
        [
            "calibrate",
            "--config",
            str(config),
            "--dataset",
            str(answers),
            "--target",
            "loss=0.35",
            "--guaranteed",
            "--out",
            str(calibrated),
            "--report",
            str(report),
        ],
    )
    assert chosen.exit_code == 0, chosen.output
    assert "certified: expected quality loss" in " ".join(chosen.output.split())
    saved = json.loads(report.read_text())
    assert saved["certificate"]["certified_loss"] <= 0.35
    assert saved["held_out"]["escalation"]["low"] <= saved["held_out"]["escalation"]["mean"]
    threshold = yaml.safe_load(calibrated.read_text())["rungs"][0]["threshold"]
    assert threshold == saved["thresholds"][0]

    out = tmp_path / "eval"
    evaluated = runner.invoke(
        app, ["eval", "--config", str(calibrated), "--dataset", str(answers), "--out", str(out)]
    )
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads((out / "eval.json").read_text())
    assert result["items"] == N
    assert result["references"]["strong_only"]["quality"] == long_right
