"""``label``: qualities by reference, by a judge (score and pairwise) and by agreement."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cascade_router import ConfigError
from cascade_router.cli.app import app
from cascade_router.evaluation import labelling
from cascade_router.evaluation.datasets import Dataset
from cascade_router.model_io import Request
from cascade_router.testing import Reply, ScriptedBackend


@pytest.mark.parametrize(
    ("method", "answer", "reference", "quality"),
    [
        ("exact", "Paris", "Paris", 1.0),
        ("exact", "paris", "Paris", 0.0),
        ("normalized", "The  Paris!", "paris", 1.0),
        ("last-number", "3 + 4 = 7, so 1,200 apples.\n#### 1,200", "1200", 1.0),
        ("last-number", "It is 12 or 13", "12", 0.0),
        ("last-number", "no number here", "12", 0.0),
        ("choice", "Let me think... The answer is (C).", "C", 1.0),
        ("choice", "B. Because it is larger", "B", 1.0),
        ("choice", "The answer is D", "B", 0.0),
        ("f1", "the cat sat on the mat", "a cat on a mat", pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1))),
    ],
)
def test_reference_methods(method: str, answer: str, reference: str, quality: Any) -> None:
    assert labelling.by_reference(answer, reference, method)[0] == quality


def test_regex_reference_and_a_bad_pattern() -> None:
    assert labelling.by_reference("Final: BLUE.", "blue", "regex", r"Final:\s*(\w+)")[0] == 1.0
    assert labelling.by_reference("no final", "blue", "regex", r"Final:\s*(\w+)")[0] == 0.0
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        labelling.Labeller("reference:regex", pattern="(unclosed")
    with pytest.raises(ConfigError, match="the regex method needs --pattern"):
        labelling.Labeller("agreement:regex")
    with pytest.raises(ConfigError, match="reference:fuzzy: known methods"):
        labelling.Labeller("reference:fuzzy")


def items() -> list[dict[str, Any]]:
    return [
        {
            "id": "a",
            "request": "What is 6 * 7?",
            "reference": "42",
            "answers": {"cheap": {"text": "6*7 = 42"}, "strong": {"text": "The answer is 42."}},
        },
        {
            "id": "b",
            "request": "What is 9 * 9?",
            "reference": "81",
            "answers": {"cheap": {"text": "9*9 = 72"}, "strong": {"text": "81"}},
        },
    ]


def test_agreement_needs_no_reference() -> None:
    data = items()
    for item in data:
        del item["reference"]
    stats = asyncio.run(labelling.Labeller("agreement:last-number").label(data, ["cheap", "strong"]))
    assert stats.labelled == 4
    assert [i["answers"]["cheap"]["quality"] for i in data] == [1.0, 0.0]
    assert [i["answers"]["strong"]["quality"] for i in data] == [1.0, 1.0]
    assert data[1]["answers"]["cheap"]["label"] == {"answer": 72.0, "last_rung": 81.0}


class Grader(ScriptedBackend):
    """A judge that answers from a function of the prompt it is shown."""

    def __init__(self, answer: Any) -> None:
        super().__init__("grader-1", [Reply("unused")])
        self._answer = answer

    async def ainvoke(self, request: Request) -> Any:
        out = await super().ainvoke(request)
        return type(out)(text=self._answer(request.messages[-1].content), usage=out.usage, model="grader-1")


def test_judge_scores_and_garbage_is_left_unlabelled_and_counted() -> None:
    def reply(prompt: str) -> str:
        if "9*9 = 72" in prompt:
            return "I am not sure what you mean."  # states no score
        return "Score: 9" if "42" in prompt or "81" in prompt else "Score: 2"

    data = items()
    judge = Grader(reply)
    stats = asyncio.run(labelling.Labeller("judge", judge=judge).label(data, ["cheap", "strong"]))
    assert (stats.labelled, stats.unreadable) == (3, 1)
    assert "quality" not in data[1]["answers"]["cheap"]  # never guessed
    assert data[0]["answers"]["cheap"]["quality"] == 9.0
    assert data[0]["answers"]["cheap"]["labelled_by"] == "judge:grader-1:score"
    assert stats.judge_calls == 4
    assert stats.judge_input_tokens > 0


def test_pairwise_judging_in_both_orders_cancels_position_bias() -> None:
    # A judge that always prefers whichever answer is shown first: neither answer can win on
    # position alone, so every pairwise label is 0.5 and marked as position-biased.
    data = items()
    stats = asyncio.run(
        labelling.Labeller("judge", judge=Grader(lambda _: "Better: A"), judge_mode="pairwise").label(
            data, ["cheap", "strong"]
        )
    )
    assert stats.labelled == 4
    assert [i["answers"]["cheap"]["quality"] for i in data] == [0.5, 0.5]
    assert all(i["answers"]["cheap"]["label"]["position_bias"] for i in data)
    assert [i["answers"]["strong"]["quality"] for i in data] == [1.0, 1.0]  # the reference rung

    def fair(prompt: str) -> str:  # prefers the right answer wherever it stands
        a, b = prompt.split("Answer A:\n")[1].split("\n\nAnswer B:\n")
        return "Better: tie" if ("72" in a) == ("72" in b) else ("Better: B" if "72" in a else "Better: A")

    data = items()
    asyncio.run(
        labelling.Labeller("judge", judge=Grader(fair), judge_mode="pairwise").label(
            data, ["cheap", "strong"]
        )
    )
    assert [i["answers"]["cheap"]["quality"] for i in data] == [1.0, 0.0]


def test_cli_label_in_place_keeps_labels_unless_relabel(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items()))
    runner = CliRunner()
    first = runner.invoke(app, ["label", str(path), "--by", "reference:last-number"])
    assert first.exit_code == 0, first.output
    assert "labelled 4 answers by reference:last-number" in first.output
    data = Dataset.load(path)
    assert data.quality("a", "cheap") == 1.0
    assert data.quality("b", "cheap") == 0.0
    again = runner.invoke(app, ["label", str(path), "--by", "agreement:exact"])
    assert "labelled 0 answers" in again.output
    assert "kept 4" in again.output
    redone = runner.invoke(app, ["label", str(path), "--by", "agreement:exact", "--relabel"])
    assert "labelled 4 answers" in redone.output
    assert Dataset.load(path).quality("a", "cheap") == 0.0  # different texts: no exact agreement
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(items()[0]) + "\n{oops\n")
    failed = runner.invoke(app, ["label", str(broken), "--by", "reference:exact"])
    assert failed.exit_code != 0
    assert isinstance(failed.exception, ConfigError)
    assert "broken.jsonl:2: not valid JSON" in str(failed.exception)


def test_log_label_by_agreement_feeds_the_dataset_export(tmp_path: Path) -> None:
    from cascade_router import Cascade
    from cascade_router.observability.decision_log import DecisionLog

    db = tmp_path / "log.db"
    log = DecisionLog(db, store_content=True)
    cheap = ScriptedBackend("cheap-1", [Reply("It is 4", confidence=0.2), Reply("It is 5", confidence=0.2)])
    strong = ScriptedBackend("strong-1", [Reply("4")])
    cascade = Cascade(
        [
            {"model": cheap, "name": "cheap", "scorer": {"kind": "logprob"}, "threshold": 0.9},
            {"model": strong, "name": "strong"},
        ],
        tracing=False,
        decision_log=log,
    )
    ids = [cascade.invoke(f"What is 2 + 2? ({i})").request_id for i in range(4)]
    log.flush(10)
    log.record_feedback(ids[0], 0.25, rung=0)  # a human label, kept
    log.close()
    runner = CliRunner()
    ran = runner.invoke(app, ["log", "label", "--db", str(db), "--by", "agreement:last-number"])
    assert ran.exit_code == 0, ran.output
    assert "labelled 7 logged answers by agreement:last-number" in " ".join(ran.output.split())
    exported = runner.invoke(app, ["log", "export", "--db", str(db), "--format", "dataset"])
    assert exported.exit_code == 0, exported.output
    path = tmp_path / "d.jsonl"
    path.write_text(exported.stdout)
    data = Dataset.load(path)
    assert [data.quality(i, "cheap") for i in ids] == [0.25, 0.0, 1.0, 0.0]
    assert [data.quality(i, "strong") for i in ids] == [1.0] * 4
    refused = runner.invoke(app, ["log", "label", "--db", str(db), "--by", "reference:exact"])
    assert refused.exit_code != 0
    assert "logged requests have no reference" in refused.output


def test_agreement_judged_by_a_model() -> None:
    def same(prompt: str) -> str:
        first = prompt.split("Answer 1:\n")[1].split("\n\nAnswer 2:", maxsplit=1)[0]
        if "72" in first:
            return "No, the first says 72."
        return "Yes" if "42" in first or "81" in first else "Hmm."

    data = items()
    labeller = labelling.Labeller("agreement:judge", judge=Grader(same))
    stats = asyncio.run(labeller.label(data, ["cheap", "strong"]))
    assert labeller.name == "agreement:judge:grader-1"
    assert [i["answers"]["cheap"]["quality"] for i in data] == [1.0, 0.0]
    assert [i["answers"]["strong"]["quality"] for i in data] == [1.0, 1.0]
    assert stats.judge_calls == 2  # the last rung is not compared with itself
    with pytest.raises(ConfigError, match="agreement:judge needs a judge model"):
        labelling.Labeller("agreement:judge")
