"""Provider failures on the wire (issue 13), through every entry point and every call mode.

A fault-injecting OpenAI-compatible server (``cascade_router.testing.fault_server``) plays the
first rung; the model name picks its fault. The ladder is [faulty rung, healthy rung], each a
real OpenAI client (the core's native backend, LangChain's ``ChatOpenAI``, LlamaIndex's
``OpenAILike``) with the SDK's own retries off, so that every request the server sees is one the
cascade made. Each case asserts what the caller got, what the server saw (how many requests,
how far apart) and what the attempts recorded (decision, error class).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from llama_index.llms.cascade_router import CascadeLLM
from llama_index.llms.openai_like import OpenAILike

from cascade_router import Cascade
from cascade_router.errors import CascadeStreamError
from cascade_router.testing.fault_server import ANSWER, FaultServer
from langchain_cascade_router import CascadeChatModel
from tests.entrypoints import answer

KINDS = ("core", "langchain", "llamaindex")
MODES = ("invoke", "ainvoke", "stream", "astream")
SETTINGS: dict[str, Any] = {"max_retries": 1, "timeout": 3, "first_token_timeout": 1, "stall_timeout": 1}


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


@dataclass
class Clients:
    """The HTTP clients of one test's rungs, closed before its event loop ends (an async client
    closed by the garbage collector after ``asyncio.run`` returned fails on a closed loop)."""

    sync: httpx.Client
    asynchronous: httpx.AsyncClient

    async def aclose(self) -> None:
        self.sync.close()
        await self.asynchronous.aclose()


def _model(kind: str, name: str, url: str, clients: Clients) -> Any:
    if kind == "core":
        return {"provider": "openai", "model": name, "base_url": url, "api_key": "sk-fault", "max_retries": 0}
    if kind == "langchain":
        return ChatOpenAI(
            model=name,
            base_url=url,
            api_key="sk-fault",  # type: ignore[arg-type]
            max_retries=0,
            http_client=clients.sync,
            http_async_client=clients.asynchronous,
        )
    return OpenAILike(
        model=name,
        api_base=url,
        api_key="sk-fault",
        is_chat_model=True,
        max_retries=0,
        context_window=4096,
        http_client=clients.sync,
        async_http_client=clients.asynchronous,
    )


def ladder(
    kind: str, fault: str, url: str, clients: Clients, scorer: dict[str, Any] | None = None, **settings: Any
) -> Any:
    # By default the faulty rung is a pure fallback rung (no scorer, no validity check), so that it
    # streams live in the stream modes: its mid-stream faults reach the caller. With a scorer it
    # is called whole (or, with early_abort, streamed internally).
    faulty: dict[str, Any] = {"model": _model(kind, fault, url, clients), "name": "faulty", "price": 0}
    faulty.update({"scorer": scorer, "threshold": 0.5} if scorer is not None else {"validate_output": False})
    rungs = [faulty, {"model": _model(kind, f"ok/{fault}", url, clients), "name": "healthy", "price": 0}]
    options = {**SETTINGS, "tracing": False, **settings}
    if kind == "core":
        return Cascade(rungs, **options)
    if kind == "langchain":
        return CascadeChatModel(rungs=rungs, **options)
    return CascadeLLM(rungs=rungs, **options)


@dataclass(frozen=True)
class Expect:
    answered: str | None
    """The rung that answered; None: the request raised ``raises``."""
    classes: tuple[str | None, ...] = ()
    """The error class of each attempt (None for an answer)."""
    faulty_requests: int = 1
    raises: type[BaseException] | None = None
    min_gap_s: float = 0.0
    """Seconds at least between the faulty rung's requests (Retry-After)."""


CASES: dict[str, Expect] = {
    "429": Expect("healthy", ("retryable", "retryable", None), 2),
    "429-retry-after-1": Expect("healthy", ("retryable", "retryable", None), 2, min_gap_s=0.95),
    "500-once": Expect("faulty", ("retryable", None), 2),
    "503": Expect("healthy", ("retryable", "retryable", None), 2),
    "reset": Expect("healthy", ("retryable", "retryable", None), 2),
    "silent": Expect("healthy", ("timeout", None), 1),
    "context-length": Expect("healthy", ("context_length", None), 1),
    "content-filter": Expect(None, raises=openai.BadRequestError),
    "auth": Expect(None, raises=openai.AuthenticationError),
}
STREAM_ONLY: dict[str, Expect] = {
    # Faults in the body of a stream: an unstreamed call gets a whole answer from these models.
    "cut-after-3": Expect(None, raises=CascadeStreamError),
    "stall-after-2": Expect(None, raises=CascadeStreamError),
    "malformed-after-2": Expect(None, raises=CascadeStreamError),
    "slow-first-token-2": Expect("healthy", ("timeout", None), 1),
}


def _run(kind: str, model: str, url: str, mode: str, **settings: Any) -> tuple[str, list[dict[str, Any]]]:
    async def go() -> tuple[str, list[dict[str, Any]]]:
        clients = Clients(httpx.Client(), httpx.AsyncClient())
        entry = ladder(kind, model, url, clients, **settings)
        try:
            return await answer(entry, mode)
        finally:
            if isinstance(entry, Cascade):
                entry.close()
                await entry.aclose()
            await clients.aclose()

    return asyncio.run(go())


def _check(server: FaultServer, kind: str, mode: str, fault: str, expect: Expect) -> None:
    model = f"{fault}/{kind}-{mode}"
    if expect.raises is not None:
        with pytest.raises(expect.raises):
            _run(kind, model, server.url, mode)
        assert server.requests_for(f"ok/{model}") == [], "a later rung answered instead of the error"
    else:
        text, attempts = _run(kind, model, server.url, mode)
        assert text.startswith(ANSWER), text
        assert attempts[-1]["name"] == expect.answered, attempts
        assert tuple(a["error_class"] for a in attempts) == expect.classes, attempts
    seen = server.requests_for(model)
    assert len(seen) == expect.faulty_requests, [r.at for r in seen]
    for earlier, later in itertools.pairwise(seen):
        assert later.at - earlier.at >= expect.min_gap_s


def _core_rungs(fault: str, url: str) -> list[dict[str, Any]]:
    def model(name: str) -> dict[str, Any]:
        return {"provider": "openai", "model": name, "base_url": url, "api_key": "sk-fault", "max_retries": 0}

    return [
        {"model": model(fault), "name": "faulty", "validate_output": False, "price": 0},
        {"model": model(f"ok/{fault}"), "name": "healthy", "price": 0},
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", list(CASES))
def test_fault_before_the_answer(server: FaultServer, kind: str, mode: str, fault: str) -> None:
    _check(server, kind, mode, fault, CASES[fault])


@pytest.mark.parametrize("mode", ["stream", "astream"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", list(STREAM_ONLY))
def test_fault_in_a_stream(server: FaultServer, kind: str, mode: str, fault: str) -> None:
    _check(server, kind, mode, fault, STREAM_ONLY[fault])


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_stall_is_noticed_after_the_stall_timeout_not_the_http_timeout(
    server: FaultServer, mode: str
) -> None:
    with pytest.raises(CascadeStreamError, match=r"no next chunk within 0\.5 s") as info:
        _run("core", f"stall-after-2/timing-{mode}", server.url, mode, stall_timeout=0.5)
    failed = info.value.attempts[-1]
    assert failed.error_class == "timeout"
    assert failed.decision == "error"
    assert failed.details["chunks_received"] == 2  # the tokens before the stall
    assert failed.cost_usd is None  # billed, by how much the provider never said


def test_retry_after_longer_than_the_wait_limit_moves_on_at_once(server: FaultServer) -> None:
    with Cascade(
        _core_rungs("429-retry-after-30/limit", server.url), **SETTINGS, retry_max_wait=5
    ) as cascade:
        result = cascade.invoke("q")
    assert result.attempts[0].evidence.retry_in is None  # no 30 s wait: the next rung at once
    assert result.answered_by.name == "healthy"
    assert [a.error_class for a in result.attempts] == ["retryable", None]
    assert len(server.requests_for("429-retry-after-30/limit")) == 1


def test_policy_error_escalates_when_told(server: FaultServer) -> None:
    with Cascade(
        _core_rungs("content-filter/escalate", server.url), **SETTINGS, on_policy_error="escalate"
    ) as entry:
        result = entry.invoke("q")
    assert result.answered_by.name == "healthy"
    assert result.attempts[0].error_class == "policy"
    assert "content_filter" in (result.attempts[0].error or "")


def test_a_raised_error_carries_the_request_id_and_is_logged(server: FaultServer, tmp_path: Any) -> None:
    from cascade_router.observability.decision_log import DecisionLog

    log = DecisionLog(tmp_path / "log.db")
    with (
        Cascade(_core_rungs("auth/logged", server.url), **SETTINGS, decision_log=log) as entry,
        pytest.raises(openai.AuthenticationError) as info,
    ):
        entry.invoke("q")
    request_id = info.value.request_id  # type: ignore[attr-defined]
    log.flush()
    row = log.get(request_id)
    assert row is not None
    assert row["outcome"] == "error"
    assert [a["error_class"] for a in row["attempts"]] == ["auth"]
    log.close()


def test_the_sdk_own_retries_show_on_the_server_not_in_the_attempts(server: FaultServer) -> None:
    """Why the docs say to turn the SDK's retries off: they are invisible to the cascade."""
    with httpx.Client() as http_client:
        hidden = ChatOpenAI(
            model="503/sdk-retries",
            base_url=server.url,
            api_key="sk-fault",  # type: ignore[arg-type]
            max_retries=2,
            http_client=http_client,
        )
        llm = CascadeChatModel(
            rungs=[
                {"model": hidden, "price": 0},
                {"model": hidden.model_copy(update={"model_name": "ok/sdk", "max_retries": 0}), "price": 0},
            ],
            tracing=False,
        )
        attempts = llm.invoke("q").response_metadata["cascade"]["attempts"]
    assert len(attempts) == 2
    assert len(server.requests_for("503/sdk-retries")) == 3


def test_failed_attempts_cost_zero_when_refused_and_unknown_when_maybe_billed(
    server: FaultServer, tmp_path: Any
) -> None:
    from typer.testing import CliRunner

    from cascade_router.cli.app import app
    from cascade_router.observability.decision_log import DecisionLog

    priced = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}

    def rungs(fault: str) -> list[dict[str, Any]]:
        return [{**r, "price": priced} for r in _core_rungs(fault, server.url)]

    with Cascade(rungs("429/billing"), tracing=False) as cascade:
        refused = cascade.invoke("q")
    assert refused.attempts[0].cost_usd == 0.0  # an HTTP error: the provider refused the call
    assert refused.cost_usd is not None
    assert refused.cost_usd == refused.cost_at_least_usd > 0

    log = DecisionLog(tmp_path / "log.db")
    with Cascade(rungs("silent/billing"), timeout=0.5, tracing=False, decision_log=log) as cascade:
        timed_out = cascade.invoke("q")
    assert timed_out.attempts[0].error_class == "timeout"
    assert timed_out.attempts[0].cost_usd is None  # the request was sent: it may be billed
    assert timed_out.cost_usd is None
    assert timed_out.cost_at_least_usd == timed_out.attempts[1].cost_usd
    assert timed_out.to_dict()["cost_usd_at_least"] == timed_out.cost_at_least_usd
    log.flush()
    shown = CliRunner().invoke(app, ["log", "show", timed_out.request_id, "--db", str(tmp_path / "log.db")])
    assert "at least $" in " ".join(shown.output.split()), shown.output
    log.close()


@pytest.mark.parametrize("mode", ["stream", "astream"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_cut_stream_continues_on_the_next_rung_without_repeating(
    server: FaultServer, kind: str, mode: str
) -> None:
    """``on_midstream_failure: continue``: the healthy rung restarts the answer (it ignores the
    instruction to continue), and the splice cuts what the caller had already seen."""
    model = f"cut-after-3/continue-{kind}-{mode}"
    text, attempts = _run(kind, model, server.url, mode, on_midstream_failure="continue")
    assert text == ANSWER  # every word once, in order: nothing repeated, nothing dropped
    assert [a["decision"] for a in attempts] == ["error", "accept"]
    assert attempts[0]["error_class"] == "retryable"  # not retried on itself: it had shown text
    continued = server.requests_for(f"ok/{model}")[-1]
    roles = [m["role"] for m in continued.messages]
    assert roles[-2:] == ["assistant", "user"]  # the emitted text, then the instruction
    assert ANSWER.startswith(continued.messages[-2]["content"])
    assert "Continue it exactly from where it stopped" in continued.messages[-1]["content"]


def test_a_rung_that_rejects_prefill_does_not_mask_the_stream_error(server: FaultServer) -> None:
    def model(name: str) -> dict[str, Any]:
        return {
            "provider": "openai",
            "model": name,
            "base_url": server.url,
            "api_key": "sk-x",
            "max_retries": 0,
        }

    rungs = [
        {"model": model("cut-after-3/prefill"), "name": "faulty", "validate_output": False, "price": 0},
        {"model": model("prefill-rejected/prefill"), "name": "prefill", "prefill": True, "price": 0},
    ]
    with Cascade(rungs, tracing=False, on_midstream_failure="continue") as cascade:
        got: list[Any] = []
        with pytest.raises(CascadeStreamError, match="'faulty' failed after part of its answer") as info:
            got.extend(cascade.stream("q"))
    assert len(got) == 3  # the three chunks the caller saw
    assert [a.error_class for a in info.value.attempts] == ["retryable", "bad_request"]
    sent = server.requests_for("prefill-rejected/prefill")[-1]
    assert sent.messages[-1]["role"] == "assistant"  # prefill: no instruction turn


def test_splice() -> None:
    from cascade_router.engine import splice

    assert splice("The answer is", "The answer is 42.") == " 42."
    assert splice("The answer is", " 42.") == " 42."
    assert splice("The answer is 4", "is 42.") == "2."
    assert splice("The answer is ", "The answer is 42.") == "42."
    assert splice("abc", "xyz") == "xyz"


EARLY_ABORT_CASES: dict[str, tuple[str, tuple[str | None, ...]]] = {
    # fault: (who answers, error class of each attempt). The faulty rung is scored, so in
    # early_abort mode it is streamed internally: a broken stream never reached the caller, and
    # the ladder falls back instead of failing the request.
    "ok": ("faulty", (None,)),
    "cut-after-3": ("healthy", ("retryable", "retryable", None)),  # retried once, as any reset
    "stall-after-2": ("healthy", ("timeout", None)),
    "malformed-after-2": ("healthy", ("other", None)),
    "slow-first-token-2": ("healthy", ("timeout", None)),
    "reset": ("healthy", ("retryable", "retryable", None)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", list(EARLY_ABORT_CASES))
def test_early_abort_rescues_a_broken_stream_of_a_scored_rung(
    server: FaultServer, kind: str, mode: str, fault: str
) -> None:
    answered, classes = EARLY_ABORT_CASES[fault]
    model = f"{fault}/early-{kind}-{mode}"
    early = {"check_every": 4}
    text, attempts = _run(
        kind, model, server.url, mode, scorer={"kind": "logprob", "aggregate": "min"}, early_abort=early
    )
    assert text.startswith(ANSWER), text
    assert attempts[-1]["name"] == answered, attempts
    assert tuple(a["error_class"] for a in attempts) == classes, attempts
    streamed = [r.stream for r in server.requests_for(model)]
    if kind == "llamaindex" and fault == "ok":
        # LlamaIndex's OpenAILike streams without logprobs, which the scorer needs: the engine
        # notices at the first check, turns early abort off for the rung and asks again whole.
        assert streamed == [True, False]
    else:
        assert all(streamed), "a scored rung in early_abort mode streams"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_a_hedge_answers_while_the_primary_stays_silent(server: FaultServer, mode: str) -> None:
    model = f"silent/hedge-{mode}"

    async def go() -> tuple[str, list[dict[str, Any]]]:
        rungs = _core_rungs(model, server.url)
        # Scored, so that it is called whole in every mode (a live rung is not hedged).
        rungs[0] = {**rungs[0], "scorer": {"kind": "logprob"}, "threshold": 0.5}
        with Cascade(rungs, **{**SETTINGS, "timeout": 5}, hedge={"delay_s": 0.2}, tracing=False) as entry:
            try:
                return await answer(entry, mode)
            finally:
                await entry.aclose()

    text, attempts = asyncio.run(go())
    assert text.startswith(ANSWER)
    assert [(a["name"], a["decision"]) for a in attempts] == [("faulty", "abandoned"), ("healthy", "accept")]
