"""Routing rules before and between the rungs (issue 14): context length, cost limits, deadlines,
domain and safety rules. A rung a rule rules out is never called; the reason is on its
``skipped`` attempt, in the result, the spans and the decision log."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from cascade_router import Cascade, CascadeExhaustedError, ConfigError
from cascade_router.config import load_config
from cascade_router.errors import BudgetExceededError, RequestRefusedError, RoutedAroundError
from cascade_router.observability.decision_log import DecisionLog
from cascade_router.routing import BudgetRule, ContextLengthRule, DomainRule, count_tokens
from cascade_router.testing import Reply, ScriptedBackend
from cascade_router.testing.fault_server import FaultServer

LONG = "word " * 400  # about 400 tokens


def _ladder(
    *, routing: list[Any], small: dict[str, Any] | None = None, **settings: Any
) -> tuple[Cascade, list[ScriptedBackend]]:
    models = [
        ScriptedBackend("small", [Reply("small answer")]),
        ScriptedBackend("big", [Reply("big answer")]),
    ]
    rungs = [
        {
            "model": models[0],
            "name": "small",
            "price": {"input_per_mtok": 1, "output_per_mtok": 2},
            **(small or {}),
        },
        {"model": models[1], "name": "big", "price": {"input_per_mtok": 10, "output_per_mtok": 30}},
    ]
    return Cascade(rungs, tracing=False, routing=routing, **settings), models


def _decisions(result: Any) -> list[tuple[str, str]]:
    return [(a.name, a.decision) for a in result.attempts]


# -- context length ------------------------------------------------------------------------------


def test_a_prompt_too_long_for_a_rung_skips_it_without_calling_it() -> None:
    cascade, models = _ladder(routing=[{"kind": "context_length"}], small={"context_window": 300})
    result = cascade.invoke(LONG)
    assert _decisions(result) == [("small", "skipped"), ("big", "accept")]
    skipped = result.attempts[0]
    tokens = count_tokens(LONG) + 4
    assert skipped.reason == f"skipped: context {tokens:,} tokens > window 300 less 10% (context_length rule)"
    assert skipped.details["rule"] == "context_length"
    assert skipped.cost_usd == 0.0
    assert isinstance(skipped.exception, RoutedAroundError)
    assert models[0].calls == 0
    # A short prompt still goes to the small rung.
    assert cascade.invoke("hi").answered_by.name == "small"


def test_the_answer_budget_counts_against_the_window() -> None:
    # 100 tokens of prompt fit a 300-token window, but not with 250 tokens kept for the answer.
    prompt = "word " * 96
    rule = {"kind": "context_length", "safety_margin": 0}
    fits, _ = _ladder(routing=[rule], small={"context_window": 300})
    assert fits.invoke(prompt).answered_by.name == "small"
    tight, _ = _ladder(routing=[{**rule, "output_tokens": 250}], small={"context_window": 300})
    reason = tight.invoke(prompt).attempts[0].reason
    assert "+ max_tokens 250 tokens > window 300 (context_length rule)" in reason


def test_windows_and_max_tokens_come_from_the_catalog_and_the_model() -> None:
    cascade = Cascade(
        [
            {"model": ScriptedBackend("gpt-4o-mini", ["a"]), "provider": "openai"},
            {
                "model": {"provider": "openai", "model": "gpt-4o", "api_key": "sk-test", "max_tokens": 512},
                "context_window": 64_000,  # the config overrides the catalog
            },
        ],
        tracing=False,
    )
    small, big = cascade.engine.rungs
    assert small.context_window == 128_000  # genai-prices knows gpt-4o-mini
    assert small.max_output_tokens is None
    assert (big.context_window, big.max_output_tokens) == (64_000, 512)
    cascade.close()


def test_a_langchain_model_s_max_tokens_is_read() -> None:
    from langchain_openai import ChatOpenAI

    from langchain_cascade_router import CascadeChatModel

    llm = CascadeChatModel(
        rungs=[{"model": ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", max_tokens=77)}], tracing=False
    )
    (rung,) = llm._ladder.engine.rungs
    assert (rung.context_window, rung.max_output_tokens) == (128_000, 77)


def test_a_context_length_refusal_teaches_the_rule() -> None:
    with FaultServer() as server:

        def model(name: str) -> dict[str, Any]:
            return {
                "provider": "openai",
                "model": name,
                "base_url": server.url,
                "api_key": "sk-t",
                "max_retries": 0,
            }

        with Cascade(
            [
                {"model": model("context-length"), "name": "small", "price": 0},
                {"model": model("ok/backup"), "name": "big", "price": 0},
            ],
            routing=[{"kind": "context_length"}],
            tracing=False,
        ) as cascade:
            first = cascade.invoke(LONG)
            assert _decisions(first) == [("small", "error"), ("big", "accept")]
            assert first.attempts[0].error_class == "context_length"
            # As long, or longer: the small rung is skipped, not called again.
            again = cascade.invoke(LONG + " more")
            assert _decisions(again) == [("small", "skipped"), ("big", "accept")]
            assert "a size its provider refused as too long" in again.attempts[0].reason
            assert len(server.requests_for("context-length")) == 1
            # Shorter: it is tried (the server refuses every size, so it fails again).
            shorter = cascade.invoke("hi")
            assert shorter.attempts[0].decision == "error"
            assert len(server.requests_for("context-length")) == 2


def test_the_local_server_s_2048_token_window_is_learned(local_llm: str) -> None:
    """A real llama.cpp server (``n_ctx`` 2048) refuses a longer prompt with a 400; the rule
    learns from it and the next long request does not call it."""
    local = {
        "provider": "openai",
        "model": "gemma-3-270m",
        "base_url": local_llm,
        "api_key": "x",
        "max_tokens": 4,
    }
    backup = ScriptedBackend("backup", [Reply("backup answer")])
    with Cascade(
        [{"model": local, "name": "local", "price": 0}, {"model": backup, "name": "backup", "price": 0}],
        routing=[{"kind": "context_length"}],
        tracing=False,
    ) as cascade:
        huge = "The quick brown fox jumps over the lazy dog. " * 300  # ~3,000 tokens
        first = cascade.invoke(huge)
        assert _decisions(first) == [("local", "error"), ("backup", "accept")]
        assert first.attempts[0].error_class == "context_length", first.attempts[0].error
        second = cascade.invoke(huge)
        assert _decisions(second) == [("local", "skipped"), ("backup", "accept")]
        assert cascade.invoke("Say hi.").attempts[0].name == "local"  # short prompts still go there


# -- cost -----------------------------------------------------------------------------------------


def test_a_request_cost_limit_skips_the_rungs_that_could_exceed_it() -> None:
    cascade, models = _ladder(routing=[{"kind": "cost", "output_tokens": 1000}])
    # small: at most ~$0.002 (1000 output tokens at $2/M); big: ~$0.03.
    result = cascade.invoke("hi", max_cost_usd=0.01, thresholds={"small": 1.0})
    assert result.answered_by.name == "small"
    with pytest.raises(CascadeExhaustedError) as err:
        cascade.invoke("hi", max_cost_usd=0.001)
    assert "worst-case cost $0.002" in str(err.value)
    assert "left of max_cost_usd $0.001" in str(err.value)
    assert [m.calls for m in models] == [1, 0]


def test_what_the_earlier_rungs_spent_is_not_available_to_the_later_ones() -> None:
    models = [
        ScriptedBackend("a", [Reply("a", usage=(1000, 1000))]),
        ScriptedBackend("b", [Reply("b", usage=(1, 1))]),
        ScriptedBackend("c", [Reply("c")]),
    ]
    price = {"input_per_mtok": 1000, "output_per_mtok": 1000}
    # Rung a spends $2 and is rejected (validate off, threshold unreachable by its score).
    cascade = Cascade(
        [
            {"model": models[0], "name": "a", "price": price, "scorer": lambda r, o: 0.0, "threshold": 0.5},
            {"model": models[1], "name": "b", "price": price, "scorer": lambda r, o: 0.0, "threshold": 0.5},
            {"model": models[2], "name": "c", "price": 0},
        ],
        routing=[{"kind": "cost", "output_tokens": 10}],
        tracing=False,
    )
    result = cascade.invoke("hi", max_cost_usd=2.005)
    assert _decisions(result) == [("a", "escalate"), ("b", "skipped"), ("c", "accept")]
    assert "left of max_cost_usd $2.005" in result.attempts[1].reason


def test_a_rung_without_a_price_cannot_be_bounded() -> None:
    cascade = Cascade(
        [
            {"model": ScriptedBackend("mystery-model", ["a"]), "name": "m"},
            {"model": ScriptedBackend("b", ["b"]), "price": 0},
        ],
        routing=[{"kind": "cost", "max_cost_usd": 1, "output_tokens": 10}],
        tracing=False,
    )
    result = cascade.invoke("hi")
    assert result.attempts[0].reason.startswith("skipped: no known price, so its cost cannot be bounded")


@pytest.mark.parametrize("value", [0, -1, True, "1", float("inf")])
def test_a_bad_request_limit_is_named(value: Any) -> None:
    cascade, _ = _ladder(routing=[{"kind": "cost"}])
    with pytest.raises(ConfigError, match=r"^max_cost_usd: expected a positive number"):
        cascade.invoke("hi", max_cost_usd=value)


# -- deadline -------------------------------------------------------------------------------------


def test_a_rung_slower_than_the_time_left_is_skipped() -> None:
    slow = ScriptedBackend("slow", [Reply("slow answer", delay=0.05)])
    fast = ScriptedBackend("fast", [Reply("fast answer")])
    cascade = Cascade(
        [{"model": slow, "name": "slow"}, {"model": fast, "name": "fast"}],
        routing=[{"kind": "deadline", "min_samples": 3}],
        tracing=False,
    )
    for _ in range(3):  # without a deadline: the slow rung answers, and its latency is learned
        assert cascade.invoke("hi").answered_by.name == "slow"
    result = cascade.invoke("hi", deadline_s=0.01)
    assert _decisions(result) == [("slow", "skipped"), ("fast", "accept")]
    assert "(p90 of its last 3) >" in result.attempts[0].reason
    assert "left of the deadline 0.01 s (deadline rule)" in result.attempts[0].reason
    assert slow.calls == 3


def test_a_called_rung_gets_what_is_left_of_the_deadline_as_its_timeout() -> None:
    stuck = ScriptedBackend("stuck", [Reply("late", delay=3)])
    backup = ScriptedBackend("backup", [Reply("backup answer")])
    cascade = Cascade(
        [{"model": stuck, "name": "stuck", "timeout": 60}, {"model": backup, "name": "backup"}],
        routing=[{"kind": "deadline", "deadline_s": 0.3}],
        tracing=False,
    )
    with pytest.raises(CascadeExhaustedError) as err:
        cascade.invoke("hi")
    # The stuck rung was cut off at the deadline (not its own 60 s), and nothing was left for
    # the backup.
    stuck_error, backup_skip = err.value.exceptions
    assert "gave no answer within 0.2" in str(stuck_error) or "gave no answer within 0.3" in str(stuck_error)
    assert "skipped: the deadline of 0.3 s has passed (deadline rule)" in str(backup_skip)
    assert backup.calls == 0


# -- domain and safety ----------------------------------------------------------------------------


def test_a_domain_keeps_matching_requests_to_approved_rungs() -> None:
    rule = {"kind": "domain", "name": "medical", "keywords": ["diagnosis", "dosage"], "only": ["big"]}
    cascade, models = _ladder(routing=[rule])
    result = cascade.invoke("What dosage of ibuprofen is safe?")
    assert _decisions(result) == [("small", "skipped"), ("big", "accept")]
    assert result.attempts[0].reason == "skipped: domain 'medical' allows only ['big'] (domain rule)"
    # Whole words only: "dosages" is not "dosage", "diagnostics" not "diagnosis".
    assert cascade.invoke("diagnostics of dosages").answered_by.name == "small"
    assert models[0].calls == 1


def test_domain_by_pattern_metadata_and_start_at() -> None:
    rules = [
        {"kind": "domain", "name": "legal", "patterns": [r"\bsu(e|ing)\b"], "start_at": "big"},
        {"kind": "domain", "name": "vip", "metadata": {"tier": "gold"}, "start_at": "big"},
    ]
    cascade, _ = _ladder(routing=rules)
    assert cascade.invoke("can I SUE my landlord").attempts[0].reason.startswith("skipped: domain 'legal'")
    result = cascade.invoke("hi", route_metadata={"tier": "gold"})
    assert result.attempts[0].reason == "skipped: domain 'vip' starts at 'big' (domain rule)"
    assert cascade.invoke("hi", route_metadata={"tier": "silver"}).answered_by.name == "small"


def test_an_unsafe_request_is_refused_and_logged(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.db")
    rule = {
        "kind": "domain",
        "name": "weapons",
        "patterns": [r"build\s+a\s+bomb"],
        "refuse": "I can't help with that.",
    }
    cascade, models = _ladder(routing=[rule], decision_log=log)
    with pytest.raises(
        RequestRefusedError, match=r"refused by the domain rule: I can't help with that\."
    ) as err:
        cascade.invoke("how do I build a  bomb")
    assert [m.calls for m in models] == [0, 0]
    log.flush()
    record = log.get(err.value.request_id)  # type: ignore[attr-defined]
    assert record is not None
    assert "RequestRefusedError" in (record["error"] or "")
    assert record["attempts"] == []
    log.close()


@pytest.mark.parametrize("wrap", ["callable", "runnable", "score"])
def test_a_classifier_is_asked_once_per_request(wrap: str) -> None:
    asked: list[str] = []

    def moderation(text: str) -> Any:
        asked.append(text)
        flagged = "poison" in text
        return (0.9 if flagged else 0.1) if wrap == "score" else flagged

    classifier: Any = RunnableLambda(moderation) if wrap == "runnable" else moderation
    models = [ScriptedBackend(n, [n]) for n in ("a", "b", "safe")]
    cascade = Cascade(
        [
            {"model": models[0], "name": "a"},
            {"model": models[1], "name": "b"},
            {"model": models[2], "name": "safe"},
        ],
        routing=[DomainRule(name="unsafe", classifier=classifier, only=["safe"])],
        tracing=False,
    )
    result = cascade.invoke("how much poison")
    assert _decisions(result) == [("a", "skipped"), ("b", "skipped"), ("safe", "accept")]
    assert len(asked) == 1
    assert cascade.invoke("hello").answered_by.name == "a"


def test_a_classifier_returning_nonsense_is_an_error_naming_it() -> None:
    cascade, _ = _ladder(routing=[DomainRule(name="odd", classifier=lambda text: "yes", only=["big"])])
    with pytest.raises(TypeError, match="the 'odd' classifier returned str"):
        cascade.invoke("hi")


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        (
            {"kind": "domain", "name": "x", "keywords": ["a"]},
            "routing[0]",
            "needs exactly one of only, start_at, refuse",
        ),
        ({"kind": "domain", "name": "x", "only": ["big"]}, "routing[0]", "matches nothing"),
        (
            {"kind": "domain", "name": "x", "keywords": ["a"], "only": ["huge"]},
            "routing[0].only",
            "no rung named 'huge'",
        ),
        (
            {"kind": "domain", "name": "x", "patterns": ["("], "refuse": "no"},
            "routing[0].patterns",
            "is not a regular expression",
        ),
        (
            {"kind": "context_length", "safety_margin": 2},
            "routing[0].safety_margin",
            "less than or equal to 1",
        ),
        ({"kind": "deadline", "deadline_s": -1}, "routing[0].deadline_s", "greater than 0"),
        ({"kind": "nope"}, "routing[0].kind", "unknown rule kind 'nope'"),
        ({"kind": "cost", "max_cost": 1}, "routing[0].max_cost", "Extra inputs are not permitted"),
    ],
)
def test_bad_rule_config_names_the_field(rule: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _ladder(routing=[rule])
    assert str(err.value).startswith(f"{field}: "), str(err.value)
    assert message in str(err.value)


def test_rules_load_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(
        "rungs:\n"
        "  - {model: {provider: openai, model: gpt-4o-mini, api_key: sk-t}, name: small,\n"
        "     context_window: 100}\n"
        "  - {model: {provider: openai, model: gpt-4o, api_key: sk-t}, name: big}\n"
        "routing:\n"
        "  - {kind: context_length}\n"
        "  - {kind: domain, name: medical, keywords: [diagnosis], only: [big]}\n"
    )
    config = load_config(path)
    assert [type(r) for r in config.routing] == [ContextLengthRule, DomainRule]
    with Cascade.from_config(path, tracing=False) as cascade:
        router = cascade.engine.router
        assert router is not None
        assert [r.kind for r in router.rules] == ["context_length", "domain"]


# -- every entry point ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("kind", ["core", "langchain", "middleware", "llamaindex"])
def test_a_skipped_rung_means_the_same_on_every_entry_point(kind: str, mode: str) -> None:
    from tests.entrypoints import answer, build

    rungs = [
        {"replies": [Reply("never")], "context_window": 50},
        {"replies": [Reply("Paris is the capital")]},
    ]
    if kind == "middleware":
        # The agent's conversation is the helper's own ("q"): a domain rule on it stands in.
        entry, _ = build(
            kind, rungs, routing=[{"kind": "domain", "name": "geo", "keywords": ["q"], "only": ["r1"]}]
        )
        text, attempts = asyncio.run(answer(entry, mode))
    else:
        entry, _ = build(kind, rungs, routing=[{"kind": "context_length"}])
        text, attempts = asyncio.run(_answer_long(entry, mode))
    assert text == "Paris is the capital"
    assert [(a["name"], a["decision"]) for a in attempts] == [("r0", "skipped"), ("r1", "accept")]
    assert "rule)" in attempts[0]["reason"]


async def _answer_long(entry: Any, mode: str) -> tuple[str, list[dict[str, Any]]]:
    """``tests.entrypoints.answer`` with a prompt too long for a 50-token window."""
    prompt = LONG
    from llama_index.llms.cascade_router import CascadeLLM

    from langchain_cascade_router import CascadeChatModel

    if isinstance(entry, CascadeChatModel):
        if mode in ("invoke", "ainvoke"):
            message = entry.invoke(prompt) if mode == "invoke" else await entry.ainvoke(prompt)
        else:
            chunks = (
                list(entry.stream(prompt)) if mode == "stream" else [c async for c in entry.astream(prompt)]
            )
            message = chunks[0]
            for chunk in chunks[1:]:
                message += chunk
        return str(message.content), message.response_metadata["cascade"]["attempts"]
    if isinstance(entry, CascadeLLM):
        if mode == "invoke":
            response: Any = entry.complete(prompt)
        elif mode == "ainvoke":
            response = await entry.acomplete(prompt)
        elif mode == "stream":
            response = list(entry.stream_complete(prompt))[-1]
        else:
            response = [r async for r in await entry.astream_complete(prompt)][-1]
        return response.text, response.additional_kwargs["cascade"]["attempts"]
    if mode in ("invoke", "ainvoke"):
        result = entry.invoke(prompt) if mode == "invoke" else await entry.ainvoke(prompt)
        return result.output.text, [a.to_dict() for a in result.attempts]
    events = list(entry.stream(prompt)) if mode == "stream" else [e async for e in entry.astream(prompt)]
    return events[-1].result.output.text, [a.to_dict() for a in events[-1].result.attempts]


def test_per_request_limits_reach_the_rules_through_langchain_and_llamaindex() -> None:
    from llama_index.llms.cascade_router import CascadeLLM
    from llama_index.llms.cascade_router.testing import ScriptedLLM

    from langchain_cascade_router import CascadeChatModel
    from langchain_cascade_router.testing import ScriptedChatModel

    rule = {"kind": "domain", "name": "vip", "metadata": {"tier": "gold"}, "start_at": "big"}
    lc = CascadeChatModel(
        rungs=[
            {"model": ScriptedChatModel(model_name="s", replies=["small"]), "name": "small"},
            {"model": ScriptedChatModel(model_name="b", replies=["big"]), "name": "big"},
        ],
        routing=[rule],
        tracing=False,
    )
    assert lc.invoke("hi").content == "small"
    assert lc.invoke("hi", route_metadata={"tier": "gold"}).content == "big"
    configured = lc.with_config(configurable={"cascade_route_metadata": {"tier": "gold"}})
    assert configured.invoke("hi").content == "big"
    li = CascadeLLM(
        rungs=[
            {"model": ScriptedLLM(model_name="s", replies=["small"]), "name": "small"},
            {"model": ScriptedLLM(model_name="b", replies=["big"]), "name": "big"},
        ],
        routing=[rule],
        tracing=False,
    )
    assert li.complete("hi").text == "small"
    assert li.complete("hi", route_metadata={"tier": "gold"}).text == "big"


def test_a_skip_is_in_the_decision_log(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.db")
    cascade, _ = _ladder(
        routing=[{"kind": "context_length"}], small={"context_window": 300}, decision_log=log
    )
    result = cascade.invoke(LONG)
    log.flush()
    record = log.get(result.request_id)
    assert record is not None
    logged = record["attempts"][0]
    assert (logged["decision"], logged["reason"]) == ("skipped", result.attempts[0].reason)
    assert logged["cost_usd"] == 0.0
    log.close()


def test_a_skip_is_in_the_rung_span(spans: Any) -> None:
    models = [ScriptedBackend("small", ["a"]), ScriptedBackend("big", ["b"])]
    cascade = Cascade(
        [{"model": models[0], "name": "small", "context_window": 300}, {"model": models[1], "name": "big"}],
        routing=[{"kind": "context_length"}],
    )
    cascade.invoke(LONG)
    rung0 = [s for s in spans.get_finished_spans() if s.name.startswith("cascade.rung 0")]
    attrs = dict(rung0[0].attributes or {})
    assert attrs["cascade.decision"] == "skipped"
    assert attrs["cascade.routing.rule"] == "context_length"
    assert "cascade.circuit.state" not in attrs
    assert str(attrs["cascade.decision.reason"]).startswith("skipped: context ")


def test_without_bpe_openai_tokens_are_estimated(monkeypatch: pytest.MonkeyPatch) -> None:
    from cascade_router.routing import base

    monkeypatch.setattr(base, "_cl100k", lambda: None)
    assert count_tokens("x" * 401) == 101  # one token per 4 characters, rounded up


# -- budgets per tenant -----------------------------------------------------------------------------

PRICE = {"input_per_mtok": 1000, "output_per_mtok": 1000}  # $0.001 a token: round numbers


def _budgeted(budget: dict[str, Any], *, delay: float = 0.0) -> tuple[Cascade, list[ScriptedBackend]]:
    models = [
        ScriptedBackend("a", [Reply("a", usage=(5, 5), delay=delay)]),
        ScriptedBackend("b", [Reply("b", usage=(5, 5), delay=delay)]),
    ]
    cascade = Cascade(
        [
            {"model": models[0], "name": "a", "price": PRICE, "scorer": lambda r, o: 0.0, "threshold": 0.5},
            {"model": models[1], "name": "b", "price": PRICE},
        ],
        routing=[{"kind": "budget", "key": "tenant", "output_tokens": 10, **budget}],
        tracing=False,
    )
    return cascade, models


def _spent(cascade: Cascade, whose: str) -> float:
    router = cascade.engine.router
    assert router is not None
    rule = router.rules[0]
    assert isinstance(rule, BudgetRule)
    value = rule._store.get_many([rule._bucket(whose, rule.per)[0]])[0]  # type: ignore[union-attr]
    return float(value or 0)


def test_a_tenant_budget_holds_the_worst_case_and_settles_the_real_cost() -> None:
    # Each request costs $0.02 (two calls of 10 tokens); a call's worst case is $0.016 (the
    # prompt bounded by its bytes, 6 tokens, and 10 of answer, at $0.001 a token).
    cascade, _ = _budgeted({"usd": 0.1, "store": None})
    whose = f"acme-{id(cascade)}"  # the in-process store is shared by every ladder
    for _ in range(4):
        result = cascade.invoke("hi", route_metadata={"tenant": whose})
        assert result.cost_usd == pytest.approx(0.02)
    assert _spent(cascade, whose) == pytest.approx(0.08)
    with pytest.raises(CascadeExhaustedError) as err:
        cascade.invoke("hi", route_metadata={"tenant": whose})
    assert f"skipped: budget of tenant {whose!r} ($0.1 a day): its worst-case cost $0.016" in str(err.value)
    assert _spent(cascade, whose) <= 0.1 + 1e-9
    # Another tenant, and requests that name none, are not affected.
    assert cascade.invoke("hi", route_metadata={"tenant": "other-" + whose}).cost_usd == pytest.approx(0.02)
    assert cascade.invoke("hi").cost_usd == pytest.approx(0.02)


def test_over_raise_ends_the_request_before_the_call() -> None:
    cascade, models = _budgeted({"usd": 0.01, "over": "raise"})
    with pytest.raises(BudgetExceededError, match=r"budget of tenant 'x\d+' \(\$0.01 a day\) exceeded"):
        cascade.invoke("hi", route_metadata={"tenant": f"x{id(cascade)}"})
    assert [m.calls for m in models] == [0, 0]


def _concurrent(cascade: Cascade, whose: str, n: int) -> list[Any]:
    async def one() -> Any:
        try:
            return await cascade.ainvoke("hi", route_metadata={"tenant": whose})
        except CascadeExhaustedError as exc:
            return exc

    async def every() -> list[Any]:
        return list(await asyncio.gather(*(one() for _ in range(n))))

    return asyncio.run(every())


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_500_concurrent_requests_never_overspend(where: str, request: pytest.FixtureRequest) -> None:
    store = request.getfixturevalue("redis_url") if where == "redis" else None
    cascade, models = _budgeted({"usd": 1.0, "store": store}, delay=0.01)
    whose = f"burst-{uuid.uuid4().hex}"  # a Redis may outlive the test run
    results = _concurrent(cascade, whose, 500)
    answered = sum(not isinstance(r, Exception) for r in results)
    assert 0 < answered < 500  # the budget ran out part way
    paid = 0.01 * sum(m.calls for m in models)  # every call costs $0.01, answered or not
    assert paid <= 1.0 + 0.016  # at most one call's worst case over
    assert _spent(cascade, whose) == pytest.approx(paid, abs=1e-6)  # every hold settled


def test_two_processes_share_a_budget_through_redis(redis_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(
        "import sys\n"
        "from cascade_router import Cascade, CascadeExhaustedError\n"
        "from cascade_router.testing import Reply, ScriptedBackend\n"
        "price = {'input_per_mtok': 1000, 'output_per_mtok': 1000}\n"
        "model = ScriptedBackend('b', [Reply('b', usage=(5, 5))])\n"
        "budget = {'kind': 'budget', 'key': 'tenant', 'usd': 0.1, 'output_tokens': 10,\n"
        "          'store': sys.argv[1]}\n"
        "c = Cascade([{'model': model, 'name': 'b', 'price': price}], routing=[budget], tracing=False)\n"
        "n = 0\n"
        "for _ in range(10):\n"
        "    try:\n"
        "        c.invoke('hi', route_metadata={'tenant': sys.argv[2]}); n += 1\n"
        "    except CascadeExhaustedError:\n"
        "        pass\n"
        "print(n)\n"
    )
    whose = f"shared-{uuid.uuid4().hex}"
    counts = [
        int(
            subprocess.run(
                [sys.executable, str(script), redis_url, whose], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    # $0.01 a request, $0.1 a day, $0.016 held for each call: nine requests fit (the tenth's
    # hold would pass the budget), whichever worker makes them.
    assert counts == [9, 0]


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy", "model_copy"])
@pytest.mark.parametrize("kind", ["langchain", "llamaindex"])
def test_models_with_rules_copy_and_pickle(kind: str, how: str) -> None:
    import copy
    import pickle

    from llama_index.llms.cascade_router import CascadeLLM
    from llama_index.llms.cascade_router.testing import ScriptedLLM

    from langchain_cascade_router import CascadeChatModel
    from langchain_cascade_router.testing import ScriptedChatModel

    rules = [
        {"kind": "context_length"},
        {"kind": "budget", "key": "tenant", "usd": 1, "output_tokens": 5},
        {"kind": "deadline", "deadline_s": 30},
        {"kind": "domain", "name": "vip", "metadata": {"tier": "gold"}, "start_at": "big"},
    ]
    price = {"input_per_mtok": 1, "output_per_mtok": 1}
    if kind == "langchain":
        rungs = [
            {"model": ScriptedChatModel(model_name="s", replies=["small"]), "name": "small", "price": price},
            {"model": ScriptedChatModel(model_name="b", replies=["big"]), "name": "big", "price": price},
        ]
        model: Any = CascadeChatModel(rungs=rungs, routing=rules, tracing=False)
    else:
        rungs = [
            {"model": ScriptedLLM(model_name="s", replies=["small"]), "name": "small", "price": price},
            {"model": ScriptedLLM(model_name="b", replies=["big"]), "name": "big", "price": price},
        ]
        model = CascadeLLM(rungs=rungs, routing=rules, tracing=False)
    twin = {
        "pickle": lambda: pickle.loads(pickle.dumps(model)),
        "deepcopy": lambda: copy.deepcopy(model),
        "copy": lambda: copy.copy(model),
        "model_copy": lambda: model.model_copy(update={"timeout": 20}),
    }[how]()

    def ask(m: Any, **kw: Any) -> str:
        return str(m.invoke("hi", **kw).content) if kind == "langchain" else m.complete("hi", **kw).text

    assert ask(twin, route_metadata={"tenant": "t", "tier": "gold"}) == "big"
    assert ask(twin, route_metadata={"tenant": "t"}) == "small"
    assert ask(model, route_metadata={"tier": "gold"}) == "big"  # the original still works


def test_a_forked_worker_keeps_routing() -> None:
    """Locks held by other threads at fork() (the latencies', a rule's, the budget store's)
    must not hang the child."""
    import os

    from tests.forking import wait_for_child

    cascade, _ = _ladder(
        routing=[
            {"kind": "context_length"},
            {"kind": "deadline", "deadline_s": 30},
            {"kind": "budget", "key": "tenant", "usd": 10, "output_tokens": 5},
        ]
    )
    router = cascade.engine.router
    assert router is not None
    held = [router.latencies._lock, router.rules[0]._lock]  # type: ignore[attr-defined]
    for lock in held:
        lock.acquire()  # as if other threads were inside them at the fork
    try:
        pid = os.fork()
        if pid == 0:  # the child: a routed request must finish, not deadlock
            code = 0
            try:
                result = cascade.invoke("hi", route_metadata={"tenant": "forked"})
                code = 0 if result.answered_by.name == "small" else 3
            except BaseException:
                code = 4
            os._exit(code)
    finally:
        for lock in held:
            lock.release()
    wait_for_child(pid)
