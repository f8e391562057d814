"""``record``: every rung's answer to the user's prompts, cached, resumable, within a budget."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cascade_router import ConfigError
from cascade_router.cascade import Cascade
from cascade_router.config import LadderConfig
from cascade_router.evaluation import recording
from cascade_router.evaluation.datasets import Dataset
from cascade_router.testing import Reply, ScriptedBackend


class RateLimited(Exception):
    """What an SDK raises for HTTP 429."""

    status_code = 429


def prompts(n: int) -> list[recording.Prompt]:
    return [
        recording.Prompt(request=f"What is {i} + {i}?", reference=str(2 * i), id=f"q{i}") for i in range(n)
    ]


def ladder(cheap: ScriptedBackend, strong: ScriptedBackend) -> Cascade:
    return Cascade(
        [
            {"model": cheap, "name": "cheap", "scorer": {"kind": "logprob"}, "threshold": 0.8, "price": 0},
            {"model": strong, "name": "strong", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        ],
        tracing=False,
    )


def run(cascade: Cascade, items: list[recording.Prompt], out: Path, **kwargs: Any) -> recording.RecordStats:
    cache = recording.CallCache(out.with_name("cache.jsonl"))
    try:
        return asyncio.run(recording.record(cascade, items, out, cache, **kwargs))
    finally:
        cache.close()


def test_every_rung_answers_every_prompt_with_logprobs_usage_cost_and_score(tmp_path: Path) -> None:
    cheap = ScriptedBackend("cheap-1", [Reply("4", confidence=0.9)])
    strong = ScriptedBackend("strong-1", [Reply("four", usage=(10, 5))])
    out = tmp_path / "answers.jsonl"
    stats = run(ladder(cheap, strong), prompts(3), out)
    assert (stats.items, stats.incomplete, stats.called) == (3, 0, 6)
    data = Dataset.load(out)
    assert [i.id for i in data] == ["q0", "q1", "q2"]
    first = data.get("q1")
    assert first.reference == "2"
    assert first.answers["cheap"].logprobs["content"][0]["logprob"] < 0
    assert first.answers["cheap"].score == pytest.approx(0.9, abs=0.05)
    assert first.answers["cheap"].scorer is not None
    assert first.answers["cheap"].scorer["method"] == "logprob"
    assert first.answers["cheap"].scorer["cost_usd"] == 0.0
    assert first.answers["strong"].cost_usd == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)
    assert first.answers["strong"].quality is None  # unlabelled until `label`
    with pytest.raises(ConfigError, match="no quality yet"):
        data.require_labels(["cheap", "strong"])


def test_rerunning_calls_nothing_and_one_more_rung_calls_only_that_rung(tmp_path: Path) -> None:
    cheap = ScriptedBackend("cheap-1", [Reply("4", confidence=0.9)])
    strong = ScriptedBackend("strong-1", [Reply("four")])
    out = tmp_path / "answers.jsonl"
    run(ladder(cheap, strong), prompts(4), out)
    assert (cheap.calls, strong.calls) == (4, 4)
    again = run(ladder(cheap, strong), prompts(4), out)
    assert (again.called, again.cached) == (0, 8)
    assert (cheap.calls, strong.calls) == (4, 4)
    middle = ScriptedBackend("middle-1", [Reply("4.0")])
    three = Cascade(
        [
            {"model": cheap, "name": "cheap", "scorer": {"kind": "logprob"}, "threshold": 0.8, "price": 0},
            {"model": middle, "name": "middle", "price": 0},
            {"model": strong, "name": "strong", "price": 0},
        ],
        tracing=False,
    )
    grown = run(three, prompts(4), out)
    assert (cheap.calls, middle.calls, strong.calls) == (4, 4, 4)
    assert grown.called == 4
    assert set(Dataset.load(out).models) == {"cheap", "middle", "strong"}


def test_labels_survive_a_rerun_when_the_answer_is_the_same(tmp_path: Path) -> None:
    cheap = ScriptedBackend("cheap-1", [Reply("4", confidence=0.9)])
    strong = ScriptedBackend("strong-1", [Reply("four")])
    out = tmp_path / "answers.jsonl"
    run(ladder(cheap, strong), prompts(2), out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    lines[0]["answers"]["cheap"]["quality"] = 1.0
    lines[0]["answers"]["cheap"]["labelled_by"] = "reference:exact"
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    run(ladder(cheap, strong), prompts(2), out)
    answer = Dataset.load(out).get("q0").answers["cheap"]
    assert (answer.quality, answer.labelled_by) == (1.0, "reference:exact")


def test_an_interrupted_run_resumes_without_losing_or_duplicating_items(tmp_path: Path) -> None:
    cheap = ScriptedBackend("cheap-1", [Reply("4", confidence=0.9)])
    strong = ScriptedBackend("strong-1", [Reply("four", delay=0.05)])
    out = tmp_path / "answers.jsonl"
    cascade = ladder(cheap, strong)
    items = prompts(12)

    async def interrupted() -> None:
        cache = recording.CallCache(tmp_path / "cache.jsonl")
        task = asyncio.create_task(
            recording.record(cascade, items, out, cache, limits=recording.Limits(concurrency=2))
        )
        await asyncio.sleep(0.2)
        task.cancel()  # as Ctrl-C or a crash would stop it
        with pytest.raises(asyncio.CancelledError):
            await task
        cache.close()

    asyncio.run(interrupted())
    calls_before = strong.calls
    assert 0 < calls_before < 12
    # what finished before the interruption is already in the output, once
    saved = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert saved
    assert len(saved) == len(set(saved))
    stats = run(cascade, items, out)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"q{i}" for i in range(12)]  # every item once, in prompt order
    assert stats.items == 12
    # answers that arrived before the interruption come from the cache; only the calls that
    # were in flight (at most the concurrency, 2) are made twice
    assert 12 <= strong.calls <= 12 + 2
    assert stats.cached >= calls_before - 2


def test_rate_limits_are_retried_with_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = ScriptedBackend(
        "cheap-1", [Reply(error=RateLimited("slow down")), Reply("4", confidence=0.9)], cycle=False
    )
    strong = ScriptedBackend("strong-1", [Reply("four")])
    out = tmp_path / "answers.jsonl"
    stats = run(ladder(cheap, strong), prompts(1), out, limits=recording.Limits(max_backoff_s=0.01))
    assert stats.rate_limited == 1
    assert stats.items == 1
    assert cheap.calls == 2


def test_a_failing_rung_leaves_the_item_incomplete_and_says_why(tmp_path: Path) -> None:
    cheap = ScriptedBackend("cheap-1", [Reply("4", confidence=0.9)])
    strong = ScriptedBackend("strong-1", [Reply(error=ValueError("context length exceeded"))])
    out = tmp_path / "answers.jsonl"
    stats = run(ladder(cheap, strong), prompts(2), out)
    assert (stats.items, stats.incomplete) == (0, 2)
    assert "q0 strong: ValueError: context length exceeded" in stats.failures[0]
    assert set(Dataset.load(out).get("q0").answers) == {"cheap"}


def test_the_budget_stops_the_run(tmp_path: Path) -> None:
    cheap = ScriptedBackend("cheap-1", [Reply("4", confidence=0.9)])
    strong = ScriptedBackend("strong-1", [Reply("four", usage=(500_000, 0))])  # $0.50 a call
    out = tmp_path / "answers.jsonl"
    stats = run(
        ladder(cheap, strong), prompts(10), out, max_cost_usd=1.0, limits=recording.Limits(concurrency=1)
    )
    assert stats.spent_usd <= 1.0 + 0.5 * 2  # at most the calls already in flight over the line
    assert strong.calls < 10
    # $0.50 a call against $1.00: the third call crosses the line; at most the two prompts in
    # flight with it (concurrency 1, two prompts at a time) are called after
    assert strong.calls <= 4
    assert stats.items < 10


def test_the_estimate_prices_uncached_calls_only(tmp_path: Path) -> None:
    cheap = ScriptedBackend("cheap-1", [Reply("4", confidence=0.9)])
    strong = ScriptedBackend("strong-1", [Reply("four")])
    cascade = ladder(cheap, strong)
    cache = recording.CallCache(tmp_path / "cache.jsonl")
    rows = recording.estimate(cascade, prompts(4), cache, output_tokens=100)
    assert [(r.rung, r.calls, r.output_tokens) for r in rows] == [("cheap", 4, 400), ("strong", 4, 400)]
    assert rows[0].cost_usd == 0.0
    assert rows[1].cost_usd == pytest.approx((rows[1].input_tokens * 1.0 + 400 * 2.0) / 1e6)
    asyncio.run(recording.record(cascade, prompts(4), tmp_path / "a.jsonl", cache))
    assert [r.calls for r in recording.estimate(cascade, prompts(4), cache, output_tokens=100)] == [0, 0]
    cache.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"request": "a"}\n{"request": "b"\n', r"p\.jsonl:2: not valid JSON"),
        ('{"request": "a"}\n{"prompt": "b"}\n', r"p\.jsonl:2: request: Field required"),
        ('{"request": ""}\n', r"p\.jsonl:1: request: Value error, is empty"),
        (
            '{"request": "a", "id": "x"}\n{"request": "b", "id": "x"}\n',
            r"p\.jsonl:2: id 'x' is already used on line 1",
        ),
        ("[1, 2]\n", r"p\.jsonl:1: expected an object, got list"),
    ],
)
def test_a_broken_prompts_file_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        recording.read_prompts(path)


def test_csv_prompts_and_conversations(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('prompt,reference\n"What is 2+2, really?",4\nHello,\n')
    items = recording.read_prompts(path)
    assert [(i.request, i.reference) for i in items] == [("What is 2+2, really?", "4"), ("Hello", None)]
    assert items[0].item_id != items[1].item_id
    assert items[0].item_id.startswith("p-")
    with pytest.raises(ConfigError, match=r"no 'question' column"):
        recording.read_prompts(path, column="question")
    convo = tmp_path / "c.jsonl"
    convo.write_text(
        json.dumps(
            {"request": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
        )
    )
    (item,) = recording.read_prompts(convo)
    assert [m.role for m in item.messages()] == ["system", "user"]


def test_judge_verdicts_are_recorded_with_the_answer_and_replayed_not_called_again(tmp_path: Path) -> None:
    from cascade_router.evaluation import metrics as ev
    from cascade_router.scorers.judge import JudgeScorer

    judge = ScriptedBackend("judge-1", [Reply("Yes", usage=(50, 1)), Reply("No", usage=(50, 1))])
    cheap = ScriptedBackend("cheap-1", [Reply("4")])
    strong = ScriptedBackend("strong-1", [Reply("four")])

    def rungs() -> list[dict[str, Any]]:
        return [
            {
                "model": cheap,
                "name": "cheap",
                "scorer": JudgeScorer(judge=judge),
                "threshold": 0.5,
                "price": 0,
            },
            {"model": strong, "name": "strong", "price": 0},
        ]

    out = tmp_path / "answers.jsonl"
    run(Cascade(rungs(), tracing=False), prompts(4), out)
    assert judge.calls == 4
    data = Dataset.load(out)
    recorded = [data.get(f"q{i}").answers["cheap"] for i in range(4)]
    assert all(a.judge_calls and len(a.judge_calls) == 1 for a in recorded)
    assert [a.score for a in recorded] == [1.0, 0.0, 1.0, 0.0]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for line in lines:
        for answer in line["answers"].values():
            answer["quality"] = 1.0
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    labelled = Dataset.load(out)
    replay = ev.replay_ladder(
        LadderConfig(
            name="t",
            rungs=[
                {"model": "cheap", "scorer": JudgeScorer(judge=judge), "threshold": 0.5},
                {"model": "strong"},
            ],
        ),
        labelled,
    )
    probes = ev.probe(replay, labelled)
    assert judge.calls == 4  # every verdict came from the dataset
    assert [p.attempts[0].score for p in probes] == [1.0, 0.0, 1.0, 0.0]
    assert probes[0].attempts[0].scorer_usage.input_tokens == 50  # the judge's tokens still count
