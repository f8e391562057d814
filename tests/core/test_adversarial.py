"""Regressions from adversarial testing of the engine: one test per defect found (issue 10)."""

from __future__ import annotations

import asyncio
import itertools
import math
import pickle
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade_router import (
    CallableScorer,
    Cascade,
    CascadeExhaustedError,
    CascadeStreamError,
    ConfigError,
    JudgeScorer,
    LogprobScorer,
    ModelOutput,
    Request,
    RungTimeoutError,
    ScorerError,
    ValidityScorer,
    load_config,
)
from cascade_router.engine import Finished
from cascade_router.errors import CircuitOpenError, RungFailure
from cascade_router.testing import Reply, ScriptedBackend

# -- retries and timeouts mean the same in every mode ----------------------------------------


def _flaky(model: str = "flaky") -> ScriptedBackend:
    return ScriptedBackend(model, [ConnectionError("HTTP 503"), Reply("Paris")], cycle=False)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_a_rungs_retries_apply_to_a_streamed_live_rung_too(mode: str) -> None:
    backend = _flaky()
    cascade = Cascade([{"model": backend, "max_retries": 1}])
    if mode == "invoke":
        text = cascade.invoke("q").output.text
    elif mode == "ainvoke":
        text = asyncio.run(cascade.ainvoke("q")).output.text
    elif mode == "stream":
        text = "".join(e.native for e in cascade.stream("q") if not isinstance(e, Finished))
    else:

        async def consume() -> str:
            return "".join([e.native async for e in cascade.astream("q") if not isinstance(e, Finished)])

        text = asyncio.run(consume())
    assert text == "Paris"
    assert backend.calls == 2


def test_a_rungs_explicit_zero_retries_beats_the_ladder_default() -> None:
    backend = ScriptedBackend("down", [ConnectionError("HTTP 503")])
    cascade = Cascade(
        [{"model": backend, "max_retries": 0}, {"model": ScriptedBackend("b", ["ok"])}], max_retries=3
    )
    assert cascade.invoke("q").output.text == "ok"
    assert backend.calls == 1
    assert cascade.engine.rungs[1].max_retries == 3  # the default still reaches rungs that set none


def test_a_rungs_explicit_null_timeout_switches_the_ladder_default_off() -> None:
    cascade = Cascade(
        [{"model": ScriptedBackend("slow", [Reply("late", delay=0.3)]), "timeout": None}], timeout=0.05
    )
    assert cascade.invoke("q").output.text == "late"


def test_a_timeout_measures_the_call_only_not_time_queued_behind_others() -> None:
    # 64 callers of a 0.3 s rung with a 1 s timeout: a shared 32-thread pool made half of them
    # wait 0.3 s in its queue and time out falsely, after which the queued calls still ran.
    slow = ScriptedBackend("slow", [Reply("slow answer", delay=0.3)])
    cascade = Cascade([{"model": slow, "timeout": 1.0}, {"model": ScriptedBackend("b", ["fallback"])}])
    answers: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        text = cascade.invoke("q").output.text
        with lock:
            answers.append(text)

    threads = [threading.Thread(target=call) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count("slow answer") == 64
    assert slow.calls == 64


def test_one_ladder_hung_on_its_provider_does_not_starve_another() -> None:
    hung = Cascade(
        [
            {"model": ScriptedBackend("hung", [Reply("x", delay=3)]), "timeout": 2.5},
            {"model": ScriptedBackend("b", ["fallback"])},
        ]
    )
    threads = [threading.Thread(target=hung.invoke, args=("q",), daemon=True) for _ in range(40)]
    for t in threads:
        t.start()
    fast = Cascade([{"model": ScriptedBackend("fast", [Reply("fast", delay=0.01)]), "timeout": 0.5}])
    assert [fast.invoke("q").output.text for _ in range(5)] == ["fast"] * 5


def test_a_timed_out_sync_call_does_not_keep_the_process_from_exiting() -> None:
    code = (
        "from cascade_router import Cascade\n"
        "from cascade_router.testing import Reply, ScriptedBackend\n"
        "c = Cascade([{'model': ScriptedBackend('hung', [Reply('x', delay=60)]), 'timeout': 0.2},\n"
        "             {'model': ScriptedBackend('b', ['fallback'])}])\n"
        "print(c.invoke('q').output.text)\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=True
    )
    assert done.stdout.strip() == "fallback"
    assert time.perf_counter() - started < 30  # the 60 s call was abandoned, not waited for


def _hang(messages: Any, answer: Any) -> float:
    time.sleep(30)
    return 1.0


async def _ahang(messages: Any, answer: Any) -> float:
    await asyncio.sleep(30)
    return 1.0


@pytest.mark.parametrize(
    ("fn", "use_async"), [(_hang, False), (_hang, True), (_ahang, False), (_ahang, True)]
)
def test_a_hanging_scorer_is_bounded_by_the_rungs_timeout_and_escalates(fn: Any, use_async: bool) -> None:
    cascade = Cascade(
        [
            {
                "model": ScriptedBackend("a", ["x"]),
                "scorer": CallableScorer(fn=fn),
                "threshold": 0.5,
                "timeout": 0.3,
            },
            {"model": ScriptedBackend("b", ["strong"])},
        ]
    )
    started = time.perf_counter()
    result = asyncio.run(cascade.ainvoke("q")) if use_async else cascade.invoke("q")
    assert time.perf_counter() - started < 5
    assert result.output.text == "strong"
    first = result.attempts[0]
    assert first.decision == "escalate"
    assert first.reason.startswith(
        "scorer error: ScorerError: the scorer of rung 'a' gave no score within 0.3 s"
    )


def test_a_blocking_sync_scorer_does_not_stall_the_event_loop() -> None:
    def slow(messages: Any, answer: Any) -> float:
        time.sleep(0.5)
        return 0.9

    cascade = Cascade(
        [
            {"model": ScriptedBackend("a", ["x"]), "scorer": CallableScorer(fn=slow), "threshold": 0.5},
            {"model": ScriptedBackend("b", ["strong"])},
        ]
    )
    ticks: list[float] = []

    async def heartbeat() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    async def main() -> Any:
        beat = asyncio.create_task(heartbeat())
        try:
            return await cascade.ainvoke("q")
        finally:
            beat.cancel()

    result = asyncio.run(main())
    assert result.output.text == "x"
    assert result.attempts[0].score == 0.9
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 10, ticks
    assert max(gaps) < 0.3, f"the loop stalled for {max(gaps):.2f} s while the scorer ran"


def test_an_inline_sync_scorer_runs_on_the_loops_thread() -> None:
    threads: list[str] = []

    def where(messages: Any, answer: Any) -> float:
        threads.append(threading.current_thread().name)
        return 0.9

    for inline, expected in ((True, "MainThread"), (False, "cascade-thread callable scorer")):
        cascade = Cascade(
            [
                {
                    "model": ScriptedBackend("a", ["x"]),
                    "scorer": CallableScorer(fn=where, inline=inline),
                    "threshold": 0.5,
                },
                {"model": ScriptedBackend("b", ["strong"])},
            ]
        )
        assert asyncio.run(cascade.ainvoke("q")).output.text == "x"
        assert threads[-1] == expected


def test_a_hanging_judge_is_bounded_too() -> None:
    judge = ScriptedBackend("judge", [Reply("Yes", delay=30)])
    cascade = Cascade(
        [
            {
                "model": ScriptedBackend("a", ["x"]),
                "scorer": JudgeScorer(judge=judge),
                "threshold": 0.5,
                "timeout": 0.3,
            },
            {"model": ScriptedBackend("b", ["strong"])},
        ]
    )
    result = asyncio.run(cascade.ainvoke("q"))
    assert result.output.text == "strong"
    assert "gave no score within" in (result.attempts[0].error or "")


# -- cancellation and abandoned calls are recorded ---------------------------------------------


def test_a_cancelled_request_ends_its_spans_and_records_the_rung_that_ran(spans: Any, tmp_path: Path) -> None:
    cascade = Cascade(
        [{"model": ScriptedBackend("slow", [Reply("x", delay=5)])}], decision_log=tmp_path / "c.db"
    )

    async def cancel() -> None:
        task = asyncio.create_task(cascade.ainvoke("q"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel())
    finished = spans.get_finished_spans()
    # Only this request's trace: calls abandoned by earlier tests may still be ending theirs.
    (trace_id,) = {s.context.trace_id for s in finished if s.name == "chat slow"}
    names = sorted(s.name for s in finished if s.context.trace_id == trace_id)
    assert names == ["cascade.rung 0 slow", "chat slow", "invoke_workflow cascade"]
    log = cascade.decision_log
    assert log is not None
    log.flush()
    (record,) = list(log.iter_records())
    assert record["outcome"] == "abandoned"
    assert [(a["decision"], a["cost_usd"]) for a in record["attempts"]] == [("abandoned", None)]
    log.close()


def test_an_error_attempt_costs_unknown_not_zero() -> None:
    result = Cascade(
        [{"model": ScriptedBackend("a", [ConnectionError("down")])}, {"model": ScriptedBackend("b", ["ok"])}]
    ).invoke("q")
    assert result.attempts[0].cost_usd is None
    assert result.cost_usd is None


# -- wrong answers ---------------------------------------------------------------------------


def test_best_never_returns_an_invalid_answer() -> None:
    cascade = Cascade(
        [
            {"model": ScriptedBackend("a", [""]), "scorer": LogprobScorer(), "threshold": 0.9},
            {
                "model": ScriptedBackend("b", ["no logprobs here"]),
                "scorer": LogprobScorer(),
                "threshold": 0.9,
            },
        ],
        accept_last=False,
        on_exhausted="best",
    )
    result = cascade.invoke("q")
    assert result.outcome == "best"
    assert result.output.text == "no logprobs here"


def test_best_with_nothing_usable_raises() -> None:
    cascade = Cascade(
        [
            {"model": ScriptedBackend("a", [""]), "scorer": LogprobScorer(), "threshold": 0.9},
            {"model": ScriptedBackend("b", [ConnectionError("down")])},
        ],
        on_exhausted="best",
    )
    with pytest.raises(CascadeExhaustedError, match="invalid: empty answer"):
        cascade.invoke("q")


def _logprobs(value: Any) -> dict[str, Any]:
    return {
        "content": [
            {"token": "Paris", "logprob": -0.01, "top_logprobs": []},
            {"token": "!", "logprob": value},
        ]
    }


@pytest.mark.parametrize("bad", [0.5, math.inf, math.nan, None, "x"])
@pytest.mark.parametrize("aggregate", ["mean", "min", "geometric_mean"])
def test_a_malformed_logprob_is_a_missing_signal_never_confidence(bad: Any, aggregate: str) -> None:
    cascade = Cascade(
        [
            {
                "model": ScriptedBackend("a", [Reply("Paris!", logprobs=_logprobs(bad))]),
                "scorer": LogprobScorer(aggregate=aggregate),  # type: ignore[arg-type]
                "threshold": 0.5,
            },
            {"model": ScriptedBackend("b", [Reply("strong", logprobs=_logprobs(None))])},
        ]
    )
    result = cascade.invoke("q")
    first = result.attempts[0]
    assert (first.decision, first.score) == ("escalate", None)
    assert first.reason.startswith("missing signal: invalid logprob")
    # The final (unscored) rung's answer with a null logprob is still an answer.
    assert result.output.text == "strong"


@pytest.mark.parametrize(
    "value", [np.float32(0.8), np.int64(1), np.array(0.8), Decimal("0.8"), Fraction(4, 5), 1, 0.8]
)
def test_a_callable_scorer_may_return_any_real_number(value: Any) -> None:
    cascade = Cascade(
        [
            {"model": ScriptedBackend("a", ["cheap"]), "scorer": lambda m, a: value, "threshold": 0.7},
            {"model": ScriptedBackend("b", ["strong"])},
        ]
    )
    result = cascade.invoke("q")
    assert result.output.text == "cheap"
    assert result.attempts[0].score == pytest.approx(float(value))


@pytest.mark.parametrize("value", [True, "0.9", 1.5, math.nan, np.array([0.8, 0.9])])
def test_a_callable_scorer_returning_no_probability_is_named_and_escalates(value: Any) -> None:
    cascade = Cascade(
        [
            {"model": ScriptedBackend("a", ["cheap"]), "scorer": lambda m, a: value, "threshold": 0.1},
            {"model": ScriptedBackend("b", ["strong"])},
        ]
    )
    first = cascade.invoke("q").attempts[0]
    assert first.decision == "escalate"
    assert f"returned {value!r}"[:30] in (first.error or "")


# -- crashes and unclear errors ---------------------------------------------------------------


def _raise(exc: BaseException) -> None:
    raise exc


class _Unpicklable(Exception):
    def __init__(self, message: str, response: object) -> None:  # like an SDK's APIStatusError
        super().__init__(message)
        self.response = response


def test_every_exception_survives_a_process_pool() -> None:
    exhausted = Cascade([{"model": ScriptedBackend("a", [_Unpicklable("HTTP 500", object())])}])
    with pytest.raises(CascadeExhaustedError) as info:
        exhausted.invoke("q")
    errors: list[BaseException] = [
        RungTimeoutError("cheap", 1.5),
        RungTimeoutError("cheap", 0.5, what="next chunk"),
        CircuitOpenError("cheap", "openai|gpt-x|-"),
        ConfigError("rungs[0].threshold", "required"),
        ScorerError("bad"),
        CascadeStreamError("cut", attempts=info.value.attempts),
        info.value,
    ]
    with ProcessPoolExecutor(1) as pool:
        for exc in errors:
            with pytest.raises(type(exc)) as raised:
                pool.submit(_raise, exc).result()
            assert str(raised.value) == str(exc)
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy.exceptions[0], RungFailure)
    assert "HTTP 500" in str(copy.exceptions[0])
    assert copy.attempts[0].error == info.value.attempts[0].error


@pytest.mark.parametrize("timeout", [math.inf, 1e10, True])
def test_absurd_timeouts_are_refused_at_construction(timeout: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Cascade([{"model": ScriptedBackend("a", ["x"])}], timeout=timeout)
    assert info.value.field == "timeout"
    with pytest.raises(ConfigError, match=r"rungs\[0\]\.timeout"):
        Cascade([{"model": ScriptedBackend("a", ["x"]), "timeout": timeout}])


def test_a_boolean_threshold_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"rungs\[0\]\.threshold: expected a number, got the boolean True"):
        load_config(
            {
                "rungs": [
                    {"model": "openai:x", "scorer": {"kind": "logprob"}, "threshold": True},
                    {"model": "openai:y"},
                ]
            }
        )


def test_a_string_instead_of_a_ladder_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected a list of rungs, got str"):
        Cascade("openai:gpt-4o")  # type: ignore[arg-type]


def test_an_invalid_refusal_pattern_is_refused_when_built() -> None:
    with pytest.raises(ConfigError, match=r"refusal_patterns\[0\] '\(unclosed' is not a regular expression"):
        Cascade(
            [
                {
                    "model": ScriptedBackend("a", ["x"]),
                    "scorer": {"kind": "validity", "refusal_patterns": ["(unclosed"]},
                    "threshold": 0.5,
                },
                {"model": ScriptedBackend("b", ["y"])},
            ]
        )
    assert ValidityScorer(refusal_patterns=("^no",)).refusal_patterns == ("^no",)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "rungs:\n  - model: a\n   scorer: [\n", r"bad\.yaml, line 3: not valid YAML"),
        ("bad.json", '{"rungs": [}', r"bad\.json, line 1: not valid JSON"),
        ("bad.toml", "rungs = [", r"bad\.toml: not valid TOML"),
        ("five.yaml", "rungs: 5\n", r"five\.yaml, line 1: rungs: expected a list of rungs, got int"),
        (
            "thr.yaml",
            "rungs:\n  - model: a\n    scorer: {kind: logprob}\n    threshold: 3\n  - model: b\n",
            r"thr\.yaml, line 4: rungs\[0\]\.threshold",
        ),
        ("list.yaml", "- model: a\n", r"list\.yaml: the file must hold a mapping"),
    ],
)
def test_config_file_mistakes_name_the_file_line_and_field(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_error_texts_are_capped() -> None:
    huge = ConnectionError("x" * 5_000_000)
    started = time.perf_counter()
    result = Cascade(
        [{"model": ScriptedBackend("a", [huge])}, {"model": ScriptedBackend("b", ["ok"])}]
    ).invoke("q")
    assert len(result.attempts[0].error or "") <= 2000
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("messages", [[], [("system", "You are terse.")]])
def test_a_request_with_nothing_to_answer_reaches_no_rung(messages: list[tuple[str, str]]) -> None:
    from cascade_router import Message

    backend = ScriptedBackend("a", ["x"])
    with pytest.raises(ValueError, match="no message to answer"):
        Cascade([{"model": backend}]).invoke([Message(r, c) for r, c in messages])
    assert backend.calls == 0


def test_the_judge_sees_a_bounded_conversation() -> None:
    judge = JudgeScorer(max_conversation_chars=1000)
    request = Request.from_text("y" * 1_000_000 + " What is 2+2?")
    prompt = judge.judge_request(request, ModelOutput("4")).messages[1].content
    assert len(prompt) < 1500
    assert "What is 2+2?" in prompt
    assert "earlier characters left out" in prompt


def test_settings_named_like_secrets_are_not_masked() -> None:
    from cascade_router import Rung

    shown = repr(Rung(model={"provider": "openai", "model": "x", "max_tokens": 64, "api_key": "k" * 20}))
    assert "'max_tokens': 64" in shown
    assert "k" * 20 not in shown


def test_a_finished_call_s_thread_takes_the_next_call_and_a_forked_child_starts_its_own() -> None:
    import os

    from cascade_router.timeouts import call_with_timeout
    from tests.forking import wait_for_child

    def ident() -> int:
        return threading.get_ident()

    def expired() -> BaseException:
        return TimeoutError("late")

    call_with_timeout(ident, 5, expired, name="a")
    time.sleep(0.05)  # the thread parks itself after its call
    before = {t.ident for t in threading.enumerate()}
    assert call_with_timeout(ident, 5, expired, name="b") in before  # no thread started for it
    # A call in flight keeps its thread: the next one gets another at once (queued behind the
    # held one, it would time out).
    gate = threading.Event()
    holder = threading.Thread(target=call_with_timeout, args=(gate.wait, 5, expired), daemon=True)
    holder.start()
    time.sleep(0.05)
    assert call_with_timeout(lambda: "quick", 1, expired) == "quick"
    gate.set()
    holder.join()
    pid = os.fork()
    if pid == 0:  # the parent's parked threads do not exist here: new ones start
        code = 1
        try:
            code = 0 if call_with_timeout(lambda: "child", 2, expired) == "child" else 1
        finally:
            os._exit(code)
    wait_for_child(pid)
