"""Offline evaluation: the dataset format, replay, the policy simulation against the real engine,
RouteLLM's metrics, the learned scorer, calibration (with the guarantee checked by simulation)
and the CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cascade_router import ConfigError
from cascade_router.cli.app import app
from cascade_router.config import LadderConfig, load_config
from cascade_router.evaluation import calibration
from cascade_router.evaluation import metrics as ev
from cascade_router.evaluation.datasets import Dataset
from cascade_router.evaluation.metrics import Point
from cascade_router.evaluation.replay import ReplayBackend
from cascade_router.scorers.learned import (
    Example,
    LearnedModel,
    LearnedScorer,
    answer_features,
    cross_fit,
    fit,
)

PRICES = {
    "cheap": {"input_per_mtok": 0.2, "output_per_mtok": 0.2},
    "strong": {"input_per_mtok": 10, "output_per_mtok": 30},
}


def synthetic(n: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """Arithmetic items; the cheap model's wrong answers state wrong arithmetic more often."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        right = rng.random() < 0.65
        shown = a * b if right or rng.random() < 0.3 else a * b + rng.randint(1, 9)
        final = shown if right else shown + rng.randint(1, 5)
        cheap = f"{a} * {b} = <<{a}*{b}={shown}>>{shown}\n#### {final}"
        strong_right = rng.random() < 0.9
        records.append(
            {
                "id": f"q{i:03d}",
                "request": f"What is {a} times {b}?",
                "reference": str(a * b),
                "answers": {
                    "cheap": {"text": cheap, "quality": right, "input_tokens": 20, "output_tokens": 15},
                    "strong": {
                        "text": f"#### {a * b if strong_right else a * b + 1}",
                        "quality": strong_right,
                        "input_tokens": 20,
                        "output_tokens": 30,
                    },
                },
            }
        )
    return records


@pytest.fixture
def dataset() -> Dataset:
    return Dataset.from_records(synthetic(), name="synthetic")


def ladder(scorer: Any, threshold: float = 0.5, **kw: Any) -> LadderConfig:
    return LadderConfig(
        name="test",
        rungs=[
            {"model": "cheap", "scorer": scorer, "threshold": threshold, "price": PRICES["cheap"]},
            {"model": "replay:strong", "price": PRICES["strong"]},
        ],
        **kw,
    )


def item_score(messages: Any, answer: Any) -> float:
    """A deterministic, imperfect scorer: right answers score higher on average."""
    digest = sum(map(ord, answer.text)) % 100 / 100
    return 0.35 * digest + 0.6 * answer.quality


# -- dataset format --------------------------------------------------------------------------


def test_format_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    good = json.dumps(synthetic(1)[0])
    path.write_text(good + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"d\.jsonl:2: not valid JSON"):
        Dataset.load(path)
    bad = synthetic(2)
    del bad[1]["answers"]["cheap"]["text"]
    path.write_text("\n".join(json.dumps(r) for r in bad))
    with pytest.raises(ConfigError, match=r"d\.jsonl:2: answers\.cheap\.text: Field required"):
        Dataset.load(path)
    twice = synthetic(1) * 2
    with pytest.raises(ConfigError, match="item id 'q000' appears twice"):
        Dataset.from_records(twice)


def test_builtin_gsm8k_matches_the_published_figures() -> None:
    ds = Dataset.load("builtin:routellm-gsm8k")
    assert len(ds) == 1307
    weak, strong = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    assert ds.models == sorted([weak, strong])
    assert round(sum(i.answers[weak].quality for i in ds) / len(ds), 3) == 0.637
    assert round(sum(i.answers[strong].quality for i in ds) / len(ds), 3) == 0.858
    oracle = sum(max(i.answers[weak].quality, i.answers[strong].quality) for i in ds) / len(ds)
    assert round(oracle, 3) == 0.930


def test_replay_backend_answers_from_the_record(dataset: Dataset) -> None:
    backend = ReplayBackend(dataset, "cheap", provider="x")
    item = dataset.items[3]
    out = backend.invoke(item.to_request())
    assert out.text == item.answers["cheap"].text
    assert (out.usage.input_tokens, out.usage.output_tokens) == (20, 15)  # type: ignore[union-attr]
    assert out.extra["quality"] == item.answers["cheap"].quality
    # found by its text too, as a live request would be
    from cascade_router.model_io import Request

    assert backend.invoke(Request.from_text(str(item.request))).text == out.text
    with pytest.raises(KeyError, match="no answers of 'gpt-9'"):
        ReplayBackend(dataset, "gpt-9")


# -- the simulation is the engine ------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_simulation_matches_the_engine_item_by_item(dataset: Dataset, threshold: float) -> None:
    cascade = ev.replay_ladder(ladder(item_score, threshold), dataset)
    probes = ev.probe(cascade, dataset)
    simulated = ev.simulate(cascade.engine, probes, [])
    for item, outcome in zip(dataset, simulated, strict=True):
        live = cascade.invoke(item.to_request())
        assert outcome.answered_rung == live.answered_by.rung
        assert outcome.cost_usd == pytest.approx(live.cost_usd)
        assert outcome.quality == item.answers[["cheap", "strong"][live.answered_by.rung]].quality


# -- metrics ---------------------------------------------------------------------------------


def test_apgr_and_cpt_on_known_curves() -> None:
    straight = [Point(None, s / 10, 0.6 + 0.3 * s / 10, None) for s in range(11)]
    assert ev.apgr(straight, 0.6, 0.9) == pytest.approx(0.5)
    assert ev.cpt(straight, 0.6, 0.9, 0.5) == pytest.approx(0.5)
    assert ev.cpt(straight, 0.6, 0.9, 0.8) == pytest.approx(0.8)
    # all the gap recovered at 20 % strong share, flat after
    steep = [Point(None, 0.0, 0.6, None), Point(None, 0.2, 0.9, None), Point(None, 1.0, 0.9, None)]
    assert ev.apgr(steep, 0.6, 0.9) == pytest.approx(0.9)
    assert ev.cpt(steep, 0.6, 0.9, 0.5) == pytest.approx(0.1)


def test_random_baseline_comes_out_at_half(dataset: Dataset) -> None:
    cascade = ev.replay_ladder(ladder(item_score), dataset)
    probes = ev.probe(cascade, dataset)
    rep = ev.report(cascade, probes, dataset.name)
    assert rep.metrics["random_apgr"] == pytest.approx(0.5, abs=0.05)
    assert rep.metrics["apgr"] > 0.6  # the informative scorer beats random
    assert rep.metrics["oracle_apgr"] > rep.metrics["random_apgr"] + 0.3  # type: ignore[operator]
    assert rep.references["strong_only"].strong_share == 1.0
    assert rep.curve[0].strong_share == 0.0
    assert rep.curve[-1].strong_share == 1.0


def test_auroc_and_bootstrap() -> None:
    assert ev.auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert ev.auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    rng = random.Random(1)
    a = [rng.random() for _ in range(400)]
    b = [x + 0.1 + rng.gauss(0, 0.05) for x in a]
    interval = ev.paired_bootstrap(a, b, resamples=1000)
    assert interval.low < 0.1 < interval.high
    assert interval.high - interval.low < 0.02


# -- learned scorer --------------------------------------------------------------------------


def test_answer_features_check_the_stated_arithmetic() -> None:
    names = __import__("cascade_router.scorers.learned", fromlist=["FEATURES"]).FEATURES
    right = dict(
        zip(names, answer_features("What is 6 times 7?", "6 * 7 = <<6*7=42>>42\n#### 42"), strict=True)
    )
    wrong = dict(
        zip(names, answer_features("What is 6 times 7?", "6 * 7 = <<6*7=43>>43\n#### 43"), strict=True)
    )
    assert (right["annotations_wrong"], wrong["annotations_wrong"]) == (0.0, 1.0)
    assert (right["inline_equations_wrong"], wrong["inline_equations_wrong"]) == (0.0, 1.0)
    assert right["final_matches_last_result"] == 1.0
    # an expression that is not plain arithmetic is never evaluated
    assert answer_features("q", "<<__import__('os')=1>>")[2] == 1.0


def test_learned_scorer_round_trip_and_config(tmp_path: Path, dataset: Dataset) -> None:
    examples = [
        Example(str(i.request), i.answers["cheap"].text, i.answers["cheap"].quality >= 0.5) for i in dataset
    ]
    model = fit(examples)
    model.save(tmp_path / "scorer.json")
    loaded = LearnedModel.load(tmp_path / "scorer.json")
    for e in examples[:20]:
        assert loaded.predict(e.question, e.answer) == pytest.approx(model.predict(e.question, e.answer))
    # a relative path in a config file is relative to that file
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "scorer.json").write_text((tmp_path / "scorer.json").read_text())
    (tmp_path / "cfg" / "ladder.yaml").write_text(
        "rungs:\n  - model: cheap\n    scorer: {kind: learned, path: scorer.json}\n"
        "    threshold: 0.5\n  - model: strong\n"
    )
    config = load_config(tmp_path / "cfg" / "ladder.yaml")
    assert isinstance(config.rungs[0].scorer, LearnedScorer)
    with pytest.raises(ConfigError, match="not a cascade-router learned-scorer file"):
        LearnedModel.load(tmp_path / "cfg" / "ladder.yaml")


def test_cross_fit_never_scores_an_item_with_a_model_that_saw_it() -> None:
    # Labels are random, but each example carries a unique word: a model scoring its own
    # training items memorises them; one scoring held-out items cannot do better than chance.
    rng = random.Random(3)
    examples = [Example(f"question {i}", f"answer token{i}xyz", rng.random() < 0.5) for i in range(300)]
    labels = [e.good for e in examples]
    in_sample = fit(examples, c=100.0)
    seen = ev.auroc([in_sample.predict(e.question, e.answer) for e in examples], labels)
    held = ev.auroc(cross_fit(examples, folds=5, seed=0, c=100.0), labels)
    assert seen is not None
    assert held is not None
    assert seen > 0.95
    assert abs(held - 0.5) < 0.12


# -- calibration -----------------------------------------------------------------------------


def test_choose_meets_each_kind_of_target(dataset: Dataset) -> None:
    cascade = ev.replay_ladder(ladder(item_score), dataset)
    probes = ev.probe(cascade, dataset)
    strongest = sum(p.qualities[-1] for p in probes) / len(probes)
    q = calibration.choose(cascade.engine, probes, calibration.Target.parse("quality=0.95"))
    assert q.met
    assert q.point.quality >= 0.95 * strongest
    e = calibration.choose(cascade.engine, probes, calibration.Target.parse("escalation=0.2"))
    assert e.met
    assert e.escalation_rate <= 0.2
    c = calibration.choose(cascade.engine, probes, calibration.Target.parse("cost=0.0004"))
    assert c.met
    assert c.point.cost_usd is not None
    assert c.point.cost_usd <= 0.0004
    with pytest.raises(ConfigError, match="expected quality=F"):
        calibration.Target.parse("speed=3")


def true_loss(t: float, p_strong: float = 0.9) -> float:
    """Population signed loss of the synthetic cascade below: weak right w.p. its score
    s ~ U(0, 1), strong right w.p. p_strong, independently; an accepted weak answer (s >= t)
    costs strong's quality minus weak's: integral over [t, 1] of (p_strong - s)."""
    return p_strong * (1 - t) - (1 - t * t) / 2


def test_learn_then_test_keeps_its_promise_by_simulation() -> None:
    epsilon, delta, n, trials = 0.05, 0.1, 500, 200
    rng = random.Random(7)
    violations = escalations = 0
    for _ in range(trials):
        s = [rng.random() for _ in range(n)]
        weak = [rng.random() < x for x in s]
        strong = [rng.random() < 0.9 for _ in range(n)]

        def losses(
            t: float, s: list[float] = s, weak: list[bool] = weak, strong: list[bool] = strong
        ) -> list[float]:
            return [float(st) - float(w) if x >= t else 0.0 for x, w, st in zip(s, weak, strong, strict=True)]

        # every 10th score: the same test, fewer candidates to run
        candidates = sorted([*sorted(s)[::10], 1.0 + 1e-9], reverse=True)
        t = calibration.learn_then_test(candidates, losses, epsilon=epsilon, delta=delta)
        assert t is not None
        violations += true_loss(min(t, 1.0)) > epsilon
        escalations += min(t, 1.0)
    rate = violations / trials
    # the promise: P(violation) <= delta (with room for the sampling error of `trials` trials)
    assert rate <= delta + 3 * math.sqrt(delta * (1 - delta) / trials)
    # and it is not trivially conservative: the best valid threshold (true loss = ε) escalates
    # 57 % of requests here; it stays within reach of it
    assert escalations / trials < 0.75


def test_guaranteed_mode_on_a_ladder(dataset: Dataset) -> None:
    cascade = ev.replay_ladder(ladder(item_score), dataset)
    probes = ev.probe(cascade, dataset)
    choice = calibration.guaranteed(cascade.engine, probes, epsilon=0.15, delta=0.1)
    assert 0.0 <= choice.thresholds[0] <= 1.0 + 1e-9
    certificate = choice.certificate
    assert certificate is not None
    assert certificate.floor <= certificate.certified_loss <= 0.15
    assert certificate.bound == "betting"
    assert certificate.items == len(probes)
    with pytest.raises(calibration.GuaranteeError, match="not even escalating everything can be certified"):
        calibration.guaranteed(cascade.engine, probes, epsilon=0.001, delta=0.1)


def test_an_empty_guarantee_is_refused_not_silently_escalating() -> None:
    """72 graded items (scores 1-10) where the cheap model is nearly as good: the smallest loss
    the data can certify is no better than never escalating, so no threshold is chosen (the old
    bound escalated 31-89 % here without saying its guarantee was empty)."""
    rng = random.Random(4)
    records = []
    for i in range(72):
        strong = rng.randint(6, 10)
        cheap = max(1, strong - (1 if rng.random() < 0.2 else 0))
        records.append(
            {
                "id": f"g{i}",
                "request": f"question {i}",
                "answers": {
                    "cheap": {"text": f"answer {i} {rng.random()}", "quality": cheap},
                    "strong": {"text": "s", "quality": strong},
                },
            }
        )
    data = Dataset.from_records(records)
    cascade = ev.replay_ladder(ladder(lambda m, a: sum(map(ord, a.text)) % 97 / 97), data)
    probes = ev.probe(cascade, data)
    with pytest.raises(calibration.GuaranteeError, match="no better than never escalating"):
        calibration.guaranteed(cascade.engine, probes, epsilon=0.05, delta=0.1)


# -- CLI -------------------------------------------------------------------------------------


def test_cli_learn_eval_calibrate_compare(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in synthetic(240)))
    runner = CliRunner()
    learned = runner.invoke(
        app, ["learn", "--dataset", str(data), "--model", "cheap", "--out", str(tmp_path / "s.json")]
    )
    assert learned.exit_code == 0, learned.output
    assert "cross-fitted AUROC" in learned.output
    config = tmp_path / "ladder.yaml"
    config.write_text(
        "name: t\nrungs:\n  - model: cheap\n    scorer: {kind: learned, path: s.json}\n    threshold: 0.5\n"
        "    price: {input_per_mtok: 0.2, output_per_mtok: 0.2}\n"
        "  - model: strong\n    price: {input_per_mtok: 10, output_per_mtok: 30}\n"
    )
    out = tmp_path / "out"
    evaluated = runner.invoke(
        app, ["eval", "--config", str(config), "--dataset", str(data), "--out", str(out)]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "| APGR |" in evaluated.stdout
    saved = json.loads((out / "eval.json").read_text())
    assert saved["items"] == 240
    assert set(saved["metrics"]) >= {"apgr", "cpt50", "cpt80", "savings_at_95", "random_apgr"}
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    calibrated = tmp_path / "cal.yaml"
    cal = runner.invoke(
        app,
        [
            "calibrate",
            "--config",
            str(config),
            "--dataset",
            str(data),
            "--target",
            "escalation=0.25",
            "--out",
            str(calibrated),
        ],
    )
    assert cal.exit_code == 0, cal.output
    assert "held-out (120 items)" in cal.output
    new_threshold = load_config(calibrated).rungs[0].threshold
    assert new_threshold is not None
    assert new_threshold != 0.5
    compared = runner.invoke(
        app, ["compare", str(config), str(calibrated), "--dataset", str(data), "--resamples", "200"]
    )
    assert compared.exit_code == 0, compared.output
    assert "B - A" in compared.output


def test_cli_calibrate_guaranteed_on_one_file_reported_on_another(tmp_path: Path) -> None:
    cal_file, test_file = tmp_path / "cal.jsonl", tmp_path / "test.jsonl"
    cal_file.write_text("\n".join(json.dumps(r) for r in synthetic(400, seed=1)))
    test_file.write_text("\n".join(json.dumps(r) for r in synthetic(300, seed=2)))
    learned = CliRunner().invoke(
        app, ["learn", "--dataset", str(cal_file), "--model", "cheap", "--out", str(tmp_path / "s.json")]
    )
    assert learned.exit_code == 0, learned.output
    config = tmp_path / "ladder.yaml"
    config.write_text(
        "name: t\nrungs:\n  - model: cheap\n    scorer: {kind: learned, path: s.json}\n"
        "    threshold: 0.5\n    price: {input_per_mtok: 0.2, output_per_mtok: 0.2}\n"
        "  - model: strong\n    price: {input_per_mtok: 10, output_per_mtok: 30}\n"
    )
    report = tmp_path / "report.json"
    args = ["calibrate", "--config", str(config), "--calibration", str(cal_file), "--test", str(test_file)]
    ran = CliRunner().invoke(
        app,
        [
            *args,
            "--target",
            "quality=0.9",
            "--guaranteed",
            "--out",
            str(tmp_path / "c.yaml"),
            "--report",
            str(report),
        ],
    )
    assert ran.exit_code == 0, ran.output
    assert "chosen on cal.jsonl (400 items)" in ran.output
    assert "held-out (300 items)" in ran.output
    # The written threshold is marked guaranteed: adapt_thresholds never moves it lower.
    written = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert written["rungs"][0]["calibration"]["guaranteed"] is True
    saved = json.loads(report.read_text())
    certificate = saved["certificate"]
    # ε = 10 % of the strong rung's accuracy on the calibration file
    strong = sum(r["answers"]["strong"]["quality"] for r in synthetic(400, seed=1)) / 400
    assert certificate["epsilon"] == pytest.approx(0.1 * strong)
    assert certificate["certified_loss"] <= certificate["epsilon"]
    held = saved["held_out"]
    for key in ("quality", "versus_last", "versus_first", "escalation", "cost_versus_last"):
        assert held[key]["low"] <= held[key]["mean"] <= held[key]["high"], key
    assert 0 < held["escalation"]["mean"] < 1
    # every rung reported on the test file, not the calibration file
    test_strong = sum(r["answers"]["strong"]["quality"] for r in synthetic(300, seed=2)) / 300
    assert held["quality"]["mean"] == pytest.approx(held["versus_last"]["mean"] * test_strong)
    mixed = CliRunner().invoke(app, [*args, "--dataset", str(cal_file), "--target", "quality=0.9"])
    assert mixed.exit_code != 0
    assert "without --dataset or --log" in mixed.output


# -- learning and calibrating from the decision log ------------------------------------------


def test_learn_and_calibrate_from_the_decision_log(tmp_path: Path) -> None:
    from cascade_router.observability.decision_log import DecisionLog
    from cascade_router.testing import Reply
    from langchain_cascade_router import CascadeChatModel
    from langchain_cascade_router.testing import ScriptedChatModel

    records = synthetic(160, seed=5)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = DecisionLog(url, store_content=True, flush_interval=0.01)
    cheap = ScriptedChatModel(
        model_name="cheap-model",
        replies=[
            Reply(r["answers"]["cheap"]["text"], confidence=0.5 + 0.45 * (i % 2))
            for i, r in enumerate(records)
        ],
        cycle=False,
    )
    strong = ScriptedChatModel(
        model_name="strong-model", replies=[r["answers"]["strong"]["text"] for r in records]
    )
    from cascade_router import LogprobScorer

    llm = CascadeChatModel(
        decision_log=log,
        rungs=[
            {"model": cheap, "name": "cheap", "scorer": LogprobScorer(), "threshold": 0.8},
            {"model": strong, "name": "strong"},
        ],
    )
    for r in records:
        message = llm.invoke(r["request"])
        request_id = message.response_metadata["cascade"]["request_id"]
        # a grader labels the cheap rung's answer on every request, and the strong one where it ran
        log.record_feedback(request_id, r["answers"]["cheap"]["quality"], rung=0)
        if len(message.response_metadata["cascade"]["attempts"]) == 2:
            log.record_feedback(request_id, r["answers"]["strong"]["quality"], rung=1)
    assert log.flush()
    stored = next(log.iter_records())
    assert stored["content"]["request"] == [{"role": "user", "content": records[0]["request"]}]
    assert stored["content"]["answers"][0] == records[0]["answers"]["cheap"]["text"]
    log.close()

    runner = CliRunner()
    learned = runner.invoke(
        app, ["learn", "--log", url, "--model", "cheap", "--out", str(tmp_path / "s.json")]
    )
    assert learned.exit_code == 0, learned.output
    assert "160 answers of cheap" in learned.output
    config = tmp_path / "prod.yaml"
    config.write_text(
        "rungs:\n  - model: openai:gpt-4o-mini\n    name: cheap\n    scorer: {kind: learned, path: s.json}\n"
        "    threshold: 0.5\n  - model: openai:gpt-4o\n    name: strong\n"
    )
    calibrated = runner.invoke(
        app,
        [
            "calibrate",
            "--config",
            str(config),
            "--log",
            url,
            "--target",
            "escalation=0.5",
            "--out",
            str(tmp_path / "cal.yaml"),
        ],
    )
    assert calibrated.exit_code == 0, calibrated.output
    assert "held-out (40 items)" in calibrated.output  # the 80 requests labelled for both rungs, split in two
    assert load_config(tmp_path / "cal.yaml").rungs[0].model == "openai:gpt-4o-mini"  # the production ladder
    # a pre-router from the same labelled traffic, for the same production ladder
    prerouted = runner.invoke(
        app,
        ["learn", "--pre-router", "--config", str(config), "--log", url, "--out", str(tmp_path / "pre.json")],
    )
    assert prerouted.exit_code == 0, prerouted.output
    assert "of 80 requests" in prerouted.output  # the requests labelled for every rung
    assert json.loads((tmp_path / "pre.json").read_text())["info"]["ladder"] == ["cheap", "strong"]
    # the labelled log as a dataset file, for eval / calibrate / learn on real traffic
    exported = runner.invoke(app, ["log", "export", "--db", url, "--format", "dataset"])
    assert exported.exit_code == 0, exported.output
    dataset_file = tmp_path / "from-log.jsonl"
    dataset_file.write_text(exported.stdout)
    data = Dataset.load(dataset_file)
    assert len(data) == 160
    assert sum("strong" in item.answers for item in data) == 80
    assert data.quality(data.items[0].id, "cheap") == float(records[0]["answers"]["cheap"]["quality"])


def test_version_1_logs_are_migrated(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from cascade_router.observability.decision_log import SCHEMA_VERSION, DecisionLog

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE cascade_requests (request_id VARCHAR(64) PRIMARY KEY, trace_id VARCHAR(32), "
                "created_at DATETIME NOT NULL, cascade VARCHAR(200) NOT NULL, "
                "config_hash VARCHAR(32) NOT NULL, "
                "package_version VARCHAR(32) NOT NULL, outcome VARCHAR(16) NOT NULL, answered_rung INTEGER, "
                "answered_name VARCHAR(200), answered_model VARCHAR(200), input_tokens INTEGER NOT NULL, "
                "output_tokens INTEGER NOT NULL, cost_usd FLOAT, latency_s FLOAT NOT NULL, error TEXT, "
                "ladder JSON NOT NULL, attempts JSON NOT NULL)"
            )
        )
        conn.execute(
            text(
                "CREATE TABLE cascade_feedback (id INTEGER PRIMARY KEY, request_id VARCHAR(64) NOT NULL, "
                "created_at DATETIME NOT NULL, score FLOAT NOT NULL, comment TEXT)"
            )
        )
        conn.execute(text("CREATE TABLE cascade_schema (version INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO cascade_schema VALUES (1)"))
    engine.dispose()
    log = DecisionLog(url)
    log.record_feedback("r1", 1.0, rung=0, require_known=False)
    assert log.get("r1") is None  # no request record, but the feedback row took the new column
    with create_engine(url).connect() as conn:
        assert conn.execute(text("SELECT max(version) FROM cascade_schema")).scalar() == SCHEMA_VERSION
        assert conn.execute(text("SELECT rung FROM cascade_feedback")).scalar() == 0
    log.close()


def test_learned_scorer_with_external_embeddings(dataset: Dataset) -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return [[float(len(t)), float(t.count("#")), float(t.count("<<"))] for t in texts]

    examples = [
        Example(str(i.request), i.answers["cheap"].text, i.answers["cheap"].quality >= 0.5) for i in dataset
    ]
    model = fit(examples, embeddings=embed)
    assert model.embedder == {"kind": "external", "dimensions": 3}
    assert calls == [len(examples)]
    scorer = LearnedScorer(model=model, embeddings=embed)
    cascade = ev.replay_ladder(ladder(scorer), dataset)
    result = cascade.invoke(dataset.items[0].to_request())
    assert result.attempts[0].method == "learned"
    assert 0.0 <= result.attempts[0].score <= 1.0  # type: ignore[operator]
    with pytest.raises(ValueError, match="fitted with external embeddings"):
        LearnedScorer(model=model)


# -- eval: cross-fitted scores, intervals, per-item outcomes, graded qualities ----------------


def test_cli_reproduces_the_readmes_cross_fitted_gsm8k_figures(tmp_path: Path) -> None:
    """`learn --cross-fit 5` then `eval --scores cross-fit` gives the README's cross-fitted row
    (benchmarks/gsm8k_cascade.py computes it in Python)."""
    from cascade_router.evaluation import demo

    published = json.loads(
        (Path(__file__).parent.parent / "benchmarks/results/gsm8k_cascade.json").read_text()
    )
    runner = CliRunner()
    scorer = tmp_path / "scorer.json"
    learned = runner.invoke(
        app,
        ["learn", "--dataset", demo.DATASET, "--model", demo.WEAK, "--cross-fit", "5", "--out", str(scorer)],
    )
    assert learned.exit_code == 0, learned.output
    assert "stored 1307 out-of-fold scores (5 folds)" in " ".join(learned.output.split())
    config = tmp_path / "gsm8k.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "gsm8k",
                "rungs": [
                    {
                        "model": demo.WEAK,
                        "scorer": {"kind": "learned", "path": "scorer.json"},
                        "threshold": 0.5,
                        "price": demo.PRICES[demo.WEAK],
                    },
                    {"model": demo.STRONG, "price": demo.PRICES[demo.STRONG]},
                ],
            }
        )
    )
    out = tmp_path / "eval"
    args = ["eval", "--config", str(config), "--dataset", demo.DATASET, "--out", str(out), "--resamples", "0"]
    evaluated = runner.invoke(app, [*args, "--scores", "cross-fit"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((out / "eval.json").read_text())["metrics"]
    assert metrics["apgr"] == pytest.approx(published["crossfit_5"]["apgr"], abs=1e-9)
    assert metrics["cpt50"] == pytest.approx(published["crossfit_5"]["cpt50"], abs=1e-9)
    # the same scorer scoring the data it was fitted on looks better: what cross-fitting avoids
    runner.invoke(app, args)
    assert json.loads((out / "eval.json").read_text())["metrics"]["apgr"] > metrics["apgr"]


def test_cli_eval_intervals_items_and_graded_scale(tmp_path: Path) -> None:
    records = synthetic(200)
    for r in records:  # graded 1-10 qualities
        for answer in r["answers"].values():
            answer["quality"] = 8 if answer["quality"] else 3
    data = tmp_path / "graded.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records))
    runner = CliRunner()
    learned = runner.invoke(
        app, ["learn", "--dataset", str(data), "--model", "cheap", "--out", str(tmp_path / "s.json")]
    )
    assert learned.exit_code == 0, learned.output
    assert "graded qualities from 3 to 8: an answer counts as good at 5.5 or above" in " ".join(
        learned.output.split()
    )
    config = tmp_path / "ladder.yaml"
    config.write_text(
        "name: t\nrungs:\n  - model: cheap\n    scorer: {kind: learned, path: s.json}\n    threshold: 0.5\n"
        "    price: {input_per_mtok: 0.2, output_per_mtok: 0.2}\n"
        "  - model: strong\n    price: {input_per_mtok: 10, output_per_mtok: 30}\n"
    )
    items = tmp_path / "items.jsonl"
    ran = runner.invoke(
        app,
        [
            "eval",
            "--config",
            str(config),
            "--dataset",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--items",
            str(items),
            "--resamples",
            "50",
        ],
    )
    assert ran.exit_code == 0, ran.output
    assert "%" not in ran.stdout.split("| configured thresholds |")[1].split("|")[1]  # 6.4, not 640 %
    saved = json.loads((tmp_path / "o" / "eval.json").read_text())
    apgr = saved["intervals"]["apgr"]
    assert apgr["low"] <= saved["metrics"]["apgr"] <= apgr["high"]
    assert apgr["resamples"] == 50
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    assert len(rows) == 200
    assert {"id", "answered_by", "rungs_called", "quality", "cost_usd", "scores", "qualities"} <= set(rows[0])
    assert sum(r["quality"] for r in rows) / 200 == pytest.approx(saved["configured"]["quality"])


def test_the_oracle_escalates_by_gain_not_by_the_first_rungs_quality() -> None:
    # Half the items: cheap wrong and strong wrong too (escalating gains nothing); a quarter:
    # cheap wrong, strong right. The oracle escalates the gaining quarter first.
    records = []
    for i in range(40):
        cheap, strong = (0, 0) if i < 20 else (0, 1) if i < 30 else (1, 1)
        records.append(
            {
                "id": f"o{i}",
                "request": f"q{i}",
                "answers": {
                    "cheap": {"text": "a", "quality": cheap},
                    "strong": {"text": "b", "quality": strong},
                },
            }
        )
    data = Dataset.from_records(records)
    cascade = ev.replay_ladder(ladder(lambda m, a: 0.5), data)
    probes = ev.probe(cascade, data)
    curve = ev.oracle_curve(probes, cascade.engine)
    reached = [p for p in curve if p.quality >= 0.5]  # the strong model's own quality
    assert min(p.strong_share for p in reached) == pytest.approx(0.25)
