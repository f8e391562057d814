"""The learned pre-router (issue 14): a difficulty model from the request alone skips a rung it
predicts will fail; offline comparison with and without it; feedback adaptation of the
pre-router and of the rungs' thresholds."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cascade_router import Cascade, ConfigError
from cascade_router.adaptation import ThresholdAdaptation, ThresholdAdapter
from cascade_router.config import load_config
from cascade_router.evaluation import metrics as ev
from cascade_router.evaluation import prerouting
from cascade_router.evaluation.datasets import Dataset
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.routing import PreRouterRule, difficulty
from cascade_router.scorers import CallableScorer
from cascade_router.testing import Reply, ScriptedBackend

HARD = [f"Prove that the sequence {i} converges and bound its limit rigorously" for i in range(30)]
EASY = [f"What is {i} plus {i + 1}?" for i in range(30)]


def _model(variant: difficulty.Variant = "logistic", rung: str = "small") -> difficulty.DifficultyModel:
    texts = HARD + EASY
    return difficulty.fit(texts, {rung: [False] * 30 + [True] * 30}, variant=variant, k=5)


@pytest.mark.parametrize("variant", ["logistic", "knn"])
def test_the_model_learns_which_requests_fail_and_survives_a_round_trip(
    variant: difficulty.Variant, tmp_path: Path
) -> None:
    model = _model(variant)
    hard, easy = model.embed(["Prove that the sequence 99 converges rigorously", "What is 7 plus 8?"])
    assert model.predict(hard)["small"] < 0.4
    assert model.predict(easy)["small"] > 0.6
    path = tmp_path / "prerouter.json"
    model.save(path)
    loaded = difficulty.DifficultyModel.load(path)
    again = loaded.embed(["Prove that the sequence 99 converges rigorously"])[0]
    assert loaded.predict(again)["small"] == pytest.approx(model.predict(hard)["small"], abs=1e-4)
    assert json.loads(path.read_text())["format"] == difficulty.FORMAT


def test_external_embeddings_are_used_and_required() -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] if "Prove" in t else [0.0, 1.0] for t in texts]

    model = difficulty.fit(HARD + EASY, {"small": [False] * 30 + [True] * 30}, embeddings=embed)
    assert model.embedder == {"kind": "external", "dimensions": 2}
    (x,) = model.embed(["Prove it"], embed)
    assert model.predict(x)["small"] < 0.5
    with pytest.raises(ConfigError, match="external embeddings"):
        model.embed(["Prove it"])
    with pytest.raises(ValueError, match="fitted with external embeddings"):
        PreRouterRule(model=model)


def test_a_file_that_is_not_a_pre_router_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(ConfigError, match="not a cascade-router pre-router file"):
        difficulty.DifficultyModel.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        difficulty.DifficultyModel.load(tmp_path / "missing.json")


def _ladder(rule: PreRouterRule, **settings: Any) -> tuple[Cascade, list[ScriptedBackend]]:
    models = [ScriptedBackend("s", [Reply("small answer")]), ScriptedBackend("b", [Reply("big answer")])]
    rungs = [{"model": models[0], "name": "small"}, {"model": models[1], "name": "big"}]
    return Cascade(rungs, tracing=False, routing=[rule], **settings), models


def test_a_request_predicted_to_fail_skips_the_rung_without_calling_it(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.db")
    cascade, models = _ladder(PreRouterRule(model=_model(), threshold=0.5), decision_log=log)
    result = cascade.invoke("Prove that the sequence 77 converges and bound its limit rigorously")
    assert [(a.name, a.decision) for a in result.attempts] == [("small", "skipped"), ("big", "accept")]
    reason = result.attempts[0].reason
    assert reason.startswith("skipped: pre-router: P(accepted and right) 0.")
    assert reason.endswith("< 0.5 (pre_router rule)")
    assert models[0].calls == 0
    easy = cascade.invoke("What is 12 plus 13?")
    assert easy.answered_by.name == "small"
    log.flush()
    record = log.get(result.request_id)
    assert record is not None
    assert record["attempts"][0]["reason"] == reason
    log.close()


def test_the_threshold_comes_from_the_rule_the_file_or_the_default(tmp_path: Path) -> None:
    model = _model()
    assert PreRouterRule(model=model).threshold_for("small") == 0.2
    model.threshold = 0.35
    path = tmp_path / "p.json"
    model.save(path)
    assert PreRouterRule(path=str(path)).threshold_for("small") == 0.35
    assert PreRouterRule(path=str(path), threshold={"small": 0.1}).threshold_for("small") == 0.1


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        ({"kind": "pre_router"}, "routing[0]", "needs exactly one of path"),
        ({"kind": "pre_router", "path": "p.json", "threshold": 2}, "routing[0]", "within [0, 1]"),
        (
            {"kind": "pre_router", "path": "p.json", "adapt": {"step": 0}},
            "routing[0].adapt.step",
            "greater than 0",
        ),
        (
            {"kind": "pre_router", "path": "p.json", "threshold": {"nope": 0.2}},
            "routing[0].threshold",
            "no rung named",
        ),
    ],
)
def test_bad_pre_router_config_names_the_field(
    rule: dict[str, Any], field: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _model().save(tmp_path / "p.json")
    rungs = [
        {"model": ScriptedBackend("s", ["a"]), "name": "small"},
        {"model": ScriptedBackend("b", ["b"]), "name": "big"},
    ]
    with pytest.raises(ConfigError) as err:
        Cascade(rungs, tracing=False, routing=[rule])
    assert str(err.value).startswith(f"{field}"), str(err.value)
    assert message in str(err.value)


def test_a_pre_router_for_other_rungs_is_refused() -> None:
    rungs = [
        {"model": ScriptedBackend("s", ["a"]), "name": "tiny"},
        {"model": ScriptedBackend("b", ["b"]), "name": "big"},
    ]
    with pytest.raises(ConfigError, match=r"routing\[0\]\.path: the pre-router predicts rungs \['small'\]"):
        Cascade(rungs, tracing=False, routing=[PreRouterRule(model=_model())])


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("kind", ["core", "langchain", "llamaindex"])
def test_the_pre_router_skips_on_every_entry_point(kind: str, mode: str) -> None:
    from tests.entrypoints import answer, build

    # Every request fails on r0, as far as this model knows.
    model = difficulty.fit(["anything", "something"], {"r0": [False, False]})
    entry, models = build(
        kind,
        [{"replies": [Reply("never")]}, {"replies": [Reply("Paris is the capital")]}],
        routing=[PreRouterRule(model=model)],
        tracing=False,
    )
    text, attempts = asyncio.run(answer(entry, mode))
    assert text == "Paris is the capital"
    assert [(a["name"], a["decision"]) for a in attempts] == [("r0", "skipped"), ("r1", "accept")]
    assert "(pre_router rule)" in attempts[0]["reason"]
    assert models[0].calls == 0


def test_copies_and_pickles_keep_the_model_and_start_their_own_state() -> None:
    rule = PreRouterRule(model=_model(), adapt={"seed": 1})
    rule.observe("small", 0.9, False)
    assert rule.bias("small") < 0
    for other in (copy.deepcopy(rule), pickle.loads(pickle.dumps(rule))):
        assert other.fitted.heads.keys() == rule.fitted.heads.keys()
        assert other.bias("small") == 0.0  # learned state is per process and per ladder


# -- adaptation -----------------------------------------------------------------------------------


def test_escalations_move_the_pre_router_s_bias_within_its_bound() -> None:
    rule = PreRouterRule(model=_model(), threshold=0.5, adapt={"step": 0.1, "max_shift": 0.5, "explore": 0})
    cascade, _ = _ladder(rule)
    # The small rung's answers are all rejected: each easy request's escalation is a failure.
    scored = Cascade(
        [
            {
                "model": ScriptedBackend("s", ["meh"]),
                "name": "small",
                "scorer": CallableScorer(fn=lambda *_: 0.0),
                "threshold": 0.5,
            },
            {"model": ScriptedBackend("b", ["ok"]), "name": "big"},
        ],
        tracing=False,
        routing=[rule],
    )
    for i in range(40):
        scored.invoke(f"What is {i} plus 2?")
    assert rule.bias("small") == pytest.approx(-0.5)
    # Now even easy requests are skipped: the model's probability less the learned bias is low.
    result = scored.invoke("What is 5 plus 2?")
    assert result.attempts[0].decision == "skipped"
    assert "(adapted)" in result.attempts[0].reason
    del cascade


def test_feedback_on_an_accepted_answer_teaches_the_pre_router() -> None:
    rule = PreRouterRule(model=_model(), threshold=0.05, adapt={"step": 0.1, "max_shift": 0.5, "explore": 0})
    cascade, _ = _ladder(rule)
    result = cascade.invoke("What is 3 plus 4?")
    assert result.answered_by.name == "small"
    cascade.record_feedback(result.request_id, 0.0)  # no decision log needed: it teaches the rule
    assert rule.bias("small") < 0
    before = rule.bias("small")
    cascade.record_feedback(result.request_id, 0.0)  # the same label twice teaches once
    assert rule.bias("small") == before


def test_exploration_lets_some_skipped_requests_through() -> None:
    model = difficulty.fit(["a", "b"], {"small": [False, False]})
    rule = PreRouterRule(model=model, adapt={"explore": 0.5, "seed": 3})
    cascade, models = _ladder(rule)
    decisions = [cascade.invoke(f"question {i}").attempts[0].decision for i in range(40)]
    assert 5 < decisions.count("skipped") < 35
    assert models[0].calls == decisions.count("accept")


def _scored_ladder(threshold: float, **settings: Any) -> Cascade:
    return Cascade(
        [
            {
                "model": ScriptedBackend("s", ["small"]),
                "name": "small",
                "scorer": CallableScorer(fn=lambda *_: 0.7),
                "threshold": threshold,
                **settings.pop("rung", {}),
            },
            {"model": ScriptedBackend("b", ["big"]), "name": "big"},
        ],
        tracing=False,
        **settings,
    )


def test_wrong_answers_raise_the_threshold_until_the_rung_escalates() -> None:
    cascade = _scored_ladder(0.6, adapt_thresholds={"target_error": 0.1, "step": 0.02, "max_move": 0.3})
    adapter = cascade.engine.adapter
    assert adapter is not None
    answered = []
    for _ in range(20):
        result = cascade.invoke("hi")
        answered.append(result.answered_by.name)
        cascade.record_feedback(result.request_id, False)
    # Each wrong label moves the threshold up by 0.02 * 0.9; past the score 0.7 the rung escalates.
    assert answered[:5] == ["small"] * 5
    assert answered[-1] == "big"
    assert adapter.threshold(0) == pytest.approx(0.6 + 6 * 0.018)
    assert cascade.invoke("hi").attempts[0].threshold == adapter.threshold(0)


def test_right_answers_lower_the_threshold_but_not_below_its_bound_or_a_guarantee() -> None:
    free = _scored_ladder(0.6, adapt_thresholds={"target_error": 0.5, "step": 0.1, "max_move": 0.15})
    for _ in range(10):
        free.record_feedback(free.invoke("hi").request_id, 1.0)
    assert free.engine.adapter is not None
    assert free.engine.adapter.threshold(0) == pytest.approx(0.45)
    calibration = {"score_edges": [0.1 * i for i in range(1, 10)], "accepted_share": 0.5, "guaranteed": True}
    pinned = _scored_ladder(
        0.6, adapt_thresholds={"target_error": 0.5, "step": 0.1}, rung={"calibration": calibration}
    )
    for _ in range(10):
        pinned.record_feedback(pinned.invoke("hi").request_id, 1.0)
    assert pinned.engine.adapter is not None
    assert pinned.engine.adapter.threshold(0) == 0.6


def test_a_request_s_own_threshold_overrides_the_adapted_one() -> None:
    cascade = _scored_ladder(0.6, adapt_thresholds={"target_error": 0.1})
    assert cascade.invoke("hi", thresholds={0: 0.9}).answered_by.name == "big"


def test_without_a_log_or_anything_learning_feedback_is_refused() -> None:
    cascade = _scored_ladder(0.6)
    with pytest.raises(ConfigError, match="decision_log"):
        cascade.record_feedback("nope", 1.0)


def test_adaptation_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"adapt_thresholds\.target_error"):
        _scored_ladder(0.6, adapt_thresholds={"target_error": 1.5})
    adapter = ThresholdAdapter(
        ThresholdAdaptation(target_error=0.1),
        Cascade([{"model": ScriptedBackend("s", ["a"])}], tracing=False).engine.rungs,
    )
    assert adapter.feedback("unknown", 0.0) is False


# -- offline: with and without ---------------------------------------------------------------------


def _dataset(n: int = 80) -> Dataset:
    rng = random.Random(0)
    records = []
    for i in range(n):
        hard = i % 2 == 0
        question = (HARD if hard else EASY)[i % 30] + f" ({i})"
        small_right = (not hard) or rng.random() < 0.1
        records.append(
            {
                "id": f"q{i}",
                "request": question,
                "answers": {
                    "small": {
                        # The small model's failures on hard questions are empty answers: its
                        # validity check escalates them, as a cascade does with hopeless answers.
                        "text": "s" if small_right else "",
                        "quality": 1.0 if small_right else 0.0,
                        "input_tokens": 100,
                        "output_tokens": 50,
                    },
                    "big": {"text": "b", "quality": 1.0, "input_tokens": 100, "output_tokens": 50},
                },
            }
        )
    return Dataset.from_records(records, name="toy")


def _toy_ladder(tmp_path: Path) -> Path:
    path = tmp_path / "ladder.yaml"
    path.write_text(
        "rungs:\n"
        "  - {model: small, name: small, price: {input_per_mtok: 1, output_per_mtok: 1},\n"
        "     scorer: {kind: validity}, threshold: 0.5}\n"
        "  - {model: big, name: big, price: {input_per_mtok: 10, output_per_mtok: 30}}\n"
    )
    return path


def test_simulation_with_skips_calls_neither_the_skipped_rung_nor_pays_for_it(tmp_path: Path) -> None:
    data = _dataset(10)
    cascade = ev.replay_ladder(load_config(_toy_ladder(tmp_path)), data)
    probes = ev.probe(cascade, data)
    plain = ev.simulate(cascade.engine, probes, [None, None])
    routed = ev.simulate(cascade.engine, probes, [None, None], [{0}] * 10)
    assert all(o.called[0] == 0 for o in plain)
    assert all(o.called == (1,) and o.reached_last for o in routed)
    assert [o.quality for o in routed] == [1.0] * 10
    assert sum(o.cost_usd or 0 for o in routed) > sum(o.cost_usd or 0 for o in plain)


def test_router_apgr_is_one_for_a_perfect_ranking_and_about_half_for_a_reversed_one() -> None:
    weak = [0.0, 0.0, 1.0, 1.0]
    strong = [1.0, 1.0, 1.0, 1.0]
    assert prerouting.router_apgr([0.1, 0.2, 0.8, 0.9], weak, strong) == pytest.approx(0.75)
    assert prerouting.router_apgr([0.9, 0.8, 0.2, 0.1], weak, strong) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="undefined"):
        prerouting.router_apgr([0.1, 0.2], [1.0, 1.0], [1.0, 1.0])


def test_learn_and_eval_with_the_pre_router_on_the_command_line(tmp_path: Path) -> None:
    from cascade_router.cli.app import app

    data = tmp_path / "data.jsonl"
    with data.open("w") as f:
        for item in _dataset():
            f.write(item.model_dump_json() + "\n")
    ladder = _toy_ladder(tmp_path)
    out = tmp_path / "pre.json"
    runner = CliRunner()
    args = ["learn", "--pre-router", "--config", str(ladder), "--dataset", str(data), "--out", str(out)]
    learned = runner.invoke(app, args)
    assert learned.exit_code == 0, learned.output
    assert "small: accepted and right on" in learned.output
    assert "cross-fitted AUROC" in learned.output
    saved = json.loads(out.read_text())
    assert saved["threshold"] is not None
    assert saved["info"]["crossfit_auroc"]["small"] > 0.7
    report = tmp_path / "eval"
    evaluated = runner.invoke(
        app,
        [
            "eval",
            "--config",
            str(ladder),
            "--dataset",
            str(data),
            "--pre-router",
            str(out),
            "--out",
            str(report),
            "--resamples",
            "0",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    figures = json.loads((report / "eval.json").read_text())["pre_router"]
    # The hard half is what the small model fails (and escalates): skipping it saves calls and
    # money at the same quality.
    assert figures["cheap_calls_saved"] > 0.3
    assert figures["cost_delta_share"] < 0
    assert figures["quality_delta"] >= 0
    assert "## With the pre-router" in (report / "eval.md").read_text()


def test_learn_without_a_model_or_pre_router_says_what_is_missing(tmp_path: Path) -> None:
    from cascade_router.cli.app import app

    result = CliRunner().invoke(app, ["learn", "--dataset", "builtin:routellm-gsm8k"])
    assert result.exit_code != 0
    assert "--model is needed" in result.output
    result = CliRunner().invoke(app, ["learn", "--pre-router", "--dataset", "builtin:routellm-gsm8k"])
    assert "--pre-router needs --config" in result.output


def test_langchain_and_llamaindex_feedback_moves_the_threshold() -> None:
    from llama_index.llms.cascade_router import CascadeLLM
    from llama_index.llms.cascade_router.testing import ScriptedLLM

    from langchain_cascade_router import CascadeChatModel
    from langchain_cascade_router.testing import ScriptedChatModel

    def rungs(small: Any, big: Any) -> list[dict[str, Any]]:
        return [
            {"model": small, "name": "small", "scorer": lambda m, a: 0.7, "threshold": 0.6},
            {"model": big, "name": "big"},
        ]

    adapt = {"target_error": 0.1, "step": 0.05}
    lc = CascadeChatModel(
        rungs=rungs(
            ScriptedChatModel(model_name="s", replies=["a"]), ScriptedChatModel(model_name="b", replies=["b"])
        ),
        adapt_thresholds=adapt,
        tracing=False,
    )
    message = lc.invoke("hi")
    lc.record_feedback(message.response_metadata["cascade"]["request_id"], False)
    assert lc._ladder.engine.adapter is not None
    assert lc._ladder.engine.adapter.threshold(0) == pytest.approx(0.6 + 0.05 * 0.9)
    li = CascadeLLM(
        rungs=rungs(ScriptedLLM(model_name="s", replies=["a"]), ScriptedLLM(model_name="b", replies=["b"])),
        adapt_thresholds=adapt,
        tracing=False,
    )
    response = li.complete("hi")
    li.record_feedback(response.additional_kwargs["cascade"]["request_id"], True)
    assert li._ladder.engine.adapter is not None
    assert li._ladder.engine.adapter.threshold(0) == pytest.approx(0.6 - 0.05 * 0.1)


def test_a_pre_router_file_in_a_config_is_relative_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    _model().save(tmp_path / "conf" / "pre.json")
    path = tmp_path / "conf" / "ladder.yaml"
    path.write_text(
        "rungs:\n"
        "  - {model: {provider: openai, model: gpt-4o-mini, api_key: sk-t}, name: small}\n"
        "  - {model: {provider: openai, model: gpt-4o, api_key: sk-t}, name: big}\n"
        "routing:\n"
        "  - {kind: pre_router, path: pre.json, threshold: 0.3}\n"
    )
    monkeypatch.chdir(tmp_path)
    with Cascade.from_config(path, tracing=False) as cascade:
        router = cascade.engine.router
        assert router is not None
        (rule,) = router.rules
        assert isinstance(rule, PreRouterRule)
        assert rule.fitted.heads.keys() == {"small"}


def test_calibrate_chooses_the_pre_router_s_threshold_with_the_rungs(tmp_path: Path) -> None:
    from cascade_router.cli.app import app

    data = tmp_path / "data.jsonl"
    with data.open("w") as f:
        for item in _dataset(200):
            f.write(item.model_dump_json() + "\n")
    runner = CliRunner()
    out = tmp_path / "pre.json"
    learned = runner.invoke(
        app,
        [
            "learn",
            "--pre-router",
            "--config",
            str(_toy_ladder(tmp_path)),
            "--dataset",
            str(data),
            "--out",
            str(out),
        ],
    )
    assert learned.exit_code == 0, learned.output
    routed = tmp_path / "routed.yaml"
    routed.write_text(
        _toy_ladder(tmp_path).read_text() + "routing:\n  - {kind: pre_router, path: pre.json}\n"
    )
    report = tmp_path / "report.json"
    ran = runner.invoke(
        app,
        [
            "calibrate",
            "--config",
            str(routed),
            "--dataset",
            str(data),
            "--target",
            "escalation=0.5",
            "--out",
            str(tmp_path / "cal.yaml"),
            "--report",
            str(report),
            "--resamples",
            "50",
        ],
    )
    assert ran.exit_code == 0, ran.output
    assert "pre-router routing[0]: threshold" in ran.output
    written = yaml.safe_load((tmp_path / "cal.yaml").read_text())
    chosen = written["routing"][0]["threshold"]
    assert 0 < chosen <= 1
    held = json.loads(report.read_text())["pre_router"]["routing[0]"]
    # The small rung fails the hard half: skipping it saves calls and money held out too.
    assert held["cheap_calls_saved"] > 0.3
    assert held["cost_delta_share"] < 0
    assert held["quality_delta"] >= 0
    # The calibrated file loads, its pre-router at the chosen threshold.
    (rule,) = load_config(tmp_path / "cal.yaml").routing
    assert isinstance(rule, PreRouterRule)
    assert rule.threshold_for("small") == chosen
