"""The decision log on SQLite and on a real PostgreSQL server: records, feedback, the CLI,
bounded buffering, shutdown, an unavailable database, and load."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from cascade_router import CascadeExhaustedError, LogprobScorer
from cascade_router.cli.app import app
from cascade_router.observability.decision_log import (
    SCHEMA_VERSION,
    DecisionLog,
    metadata,
    record_feedback,
    schema_table,
)
from cascade_router.testing import Reply
from langchain_cascade_router import CascadeChatModel
from langchain_cascade_router.testing import ScriptedChatModel

PG_ENV = "CASCADE_TEST_POSTGRES_URL"


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI must set {PG_ENV}: .ci/run starts a PostgreSQL server for these tests")
        pytest.skip(f"no PostgreSQL server here: set {PG_ENV}=postgresql+psycopg://... (.ci/run starts one)")
    engine = create_engine(url)
    metadata.drop_all(engine)  # every test starts from an empty log
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.db'}"
    return postgres_url()


@pytest.fixture
def log(db_url: str) -> Iterator[DecisionLog]:
    log = DecisionLog(db_url, flush_interval=0.05)
    yield log
    log.close()


def ladder(log: DecisionLog | str, cheap: list[Any], strong: list[Any], **kw: Any) -> CascadeChatModel:
    return CascadeChatModel(
        name="support",
        decision_log=log,
        rungs=[
            {
                "model": ScriptedChatModel(model_name="cheap-model", provider="openai", replies=cheap),
                "name": "cheap",
                "scorer": LogprobScorer(),
                "threshold": 0.8,
                "price": {"input_per_mtok": 1, "output_per_mtok": 2},
            },
            {
                "model": ScriptedChatModel(model_name="strong-model", provider="openai", replies=strong),
                "name": "strong",
                "price": {"input_per_mtok": 10, "output_per_mtok": 30},
            },
        ],
        **kw,
    )


def test_one_record_per_request_with_feedback_and_cli(log: DecisionLog, db_url: str) -> None:
    llm = ladder(
        log,
        [Reply("Paris", confidence=0.95), Reply("Lyon", confidence=0.2), Reply("x", confidence=0.1)],
        ["Paris!", RuntimeError("strong is down")],
    )
    accepted = llm.invoke("capital?")
    escalated = llm.invoke("capital?")
    with pytest.raises(CascadeExhaustedError) as info:
        llm.invoke("capital?")
    ids = [
        accepted.response_metadata["cascade"]["request_id"],
        escalated.response_metadata["cascade"]["request_id"],
        info.value.request_id,
    ]  # type: ignore[attr-defined]
    assert log.flush()
    records = list(log.iter_records())
    assert [r["request_id"] for r in records] == ids
    assert [r["outcome"] for r in records] == ["accepted", "accepted", "exhausted"]
    first, second, third = records
    assert first["answered_model"] == "cheap-model"
    assert first["attempts"] == accepted.response_metadata["cascade"]["attempts"]
    assert second["answered_name"] == "strong"
    assert [a["decision"] for a in second["attempts"]] == ["escalate", "accept"]
    assert second["cost_usd"] == pytest.approx(escalated.response_metadata["cascade"]["cost_usd"])
    assert second["input_tokens"] == escalated.usage_metadata["input_tokens"]  # type: ignore[index]
    assert third["error"].startswith("CascadeExhaustedError: no rung gave an acceptable answer")
    assert third["attempts"][1]["error"] == "RuntimeError: strong is down"
    assert {r["config_hash"] for r in records} == {llm.engine.config_hash}
    assert first["ladder"][0]["scorer"] == {
        "kind": "logprob",
        "aggregate": "mean",
        "quantile": 0.1,
        "skip_whitespace": True,
    }
    assert first["package_version"]
    assert first["trace_id"] == accepted.response_metadata["cascade"]["trace_id"]

    llm.record_feedback(ids[1], 1.0, comment="right answer")
    record_feedback(ids[0], 0.0, db=log)
    assert log.get(ids[1])["feedback"][0]["comment"] == "right answer"  # type: ignore[index]

    runner = CliRunner()
    out = runner.invoke(app, ["log", "export", "--db", db_url, "--format", "jsonl"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    exported = [json.loads(line) for line in lines]  # nothing but JSON on stdout
    assert [e["request_id"] for e in exported] == ids
    assert [f["score"] for f in exported[1]["feedback"]] == [1.0]
    assert [f["score"] for f in exported[0]["feedback"]] == [0.0]

    env = {"COLUMNS": "300"}
    listing = runner.invoke(app, ["log", "list", "--db", db_url], env=env)
    assert listing.exit_code == 0, listing.output
    assert all(i in listing.stdout for i in ids)
    shown = runner.invoke(app, ["log", "show", ids[1], "--db", db_url], env=env)
    assert shown.exit_code == 0, shown.output
    assert "score 0.200 < threshold 0.8" in shown.stdout
    assert "right answer" in shown.stdout
    stats = runner.invoke(app, ["log", "stats", "--db", db_url], env=env)
    assert stats.exit_code == 0, stats.output
    assert "requests: 3" in stats.stdout
    assert "escalation rate: 66.7%" in stats.stdout
    assert "strong-model" in stats.stdout
    missing = runner.invoke(app, ["log", "show", "nope", "--db", db_url])
    assert missing.exit_code == 1


def test_cli_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["log", "list", "--db", str(tmp_path / "none.db")])
    assert out.exit_code == 2
    assert "no decision log" in out.output


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'future.db'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(schema_table.insert(), {"version": SCHEMA_VERSION + 1})
    with pytest.raises(RuntimeError, match="newer than this cascade-router understands"):
        DecisionLog(url).recent()


def test_full_buffer_drops_are_counted_and_reported_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = DecisionLog(tmp_path / "small.db", max_buffer=5, batch_size=1, flush_interval=0.01)
    gate = threading.Event()
    real_write = log._write

    def slow_write(batch: list[dict[str, Any]]) -> None:
        gate.wait(10)
        real_write(batch)

    log._write = slow_write  # type: ignore[method-assign]
    llm = ladder(log, [Reply("Paris", confidence=0.95)], ["S"])
    with caplog.at_level(logging.WARNING, logger="cascade_router.decision_log"):
        answers = [llm.invoke("q").content for _ in range(20)]
    assert answers == ["Paris"] * 20  # the requests never waited for the log
    stats = log.stats()
    assert stats.dropped >= 14  # at most 5 buffered plus 1 in flight
    assert stats.dropped + stats.pending == 20
    # One warning per report interval (60 s by default), not one per lost record.
    assert len([r for r in caplog.records if "lost since the last report" in r.getMessage()]) == 1
    gate.set()
    log.close()
    final = log.stats()
    assert final.written + final.dropped == 20
    assert final.pending == 0


def test_nothing_lost_on_clean_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "atexit.db"
    code = (
        "from datetime import UTC, datetime\n"
        "from cascade_router.observability.decision_log import DecisionLog\n"
        f"log = DecisionLog({str(path)!r}, flush_interval=60)\n"
        "for i in range(500):\n"
        "    log.record({'request_id': f'r{i}', 'trace_id': None, 'created_at': datetime.now(UTC),\n"
        "        'cascade': 'c', 'config_hash': 'h', 'package_version': '0', 'outcome': 'accepted',\n"
        "        'answered_rung': 0, 'answered_name': 'a', 'answered_model': 'm', 'input_tokens': 1,\n"
        "        'output_tokens': 1, 'cost_usd': None, 'latency_s': 0.0, 'error': None,\n"
        "        'ladder': [], 'attempts': []})\n"
        # no close(): the atexit hook must write the 500 queued records
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert len(list(DecisionLog(path).iter_records())) == 500


UNREACHABLE = "postgresql+psycopg://cascade:hunter2secret@127.0.0.1:1/nowhere"


def test_unavailable_database_never_fails_a_request(caplog: pytest.LogCaptureFixture) -> None:
    log = DecisionLog(UNREACHABLE, flush_interval=0.01, retry_for=0)
    llm = ladder(log, [Reply("Paris", confidence=0.95)], ["S"])
    with caplog.at_level(logging.WARNING, logger="cascade_router.decision_log"):
        assert [llm.invoke("q").content for _ in range(30)] == ["Paris"] * 30
        log.flush()
    assert log.stats().failed == 30
    warnings = [r.getMessage() for r in caplog.records if "lost since the last report" in r.getMessage()]
    assert len(warnings) == 1
    assert "hunter2secret" not in warnings[0]
    assert "hunter2secret" not in repr(log)
    log.close()


def load_ladder(log: DecisionLog | str) -> CascadeChatModel:
    """Three rungs; the first two fail on every tenth call, the last never does."""

    def replies(text: str) -> list[Any]:
        return [ConnectionError("HTTP 503")] + [Reply(text, confidence=0.95)] * 9

    return CascadeChatModel(
        name="load",
        decision_log=log,
        rungs=[
            {
                "model": ScriptedChatModel(model_name="a", replies=replies("a")),
                "scorer": LogprobScorer(),
                "threshold": 0.5,
            },
            {
                "model": ScriptedChatModel(model_name="b", replies=replies("b")),
                "scorer": LogprobScorer(),
                "threshold": 0.5,
            },
            {"model": ScriptedChatModel(model_name="c", replies=["c"])},
        ],
    )


async def run_load(llm: CascadeChatModel, n: int) -> list[Any]:
    return await asyncio.gather(*(llm.ainvoke(f"question {i}") for i in range(n)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_2000_concurrent_requests_give_2000_records_and_spans(
    backend: str, tmp_path: Path, spans: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'load.db'}" if backend == "sqlite" else postgres_url()
    log = DecisionLog(url, flush_interval=0.05)
    llm = load_ladder(log)
    answers = await run_load(llm, 2000)
    assert len(answers) == 2000
    assert log.flush(60)
    records = list(log.iter_records())
    assert len(records) == 2000
    assert len({r["request_id"] for r in records}) == 2000
    failed_attempts = sum(a["decision"] == "error" for r in records for a in r["attempts"])
    assert failed_attempts == 200 + 20  # every 10th call of rung a, then every 10th of the 200 sent to b
    calls = sum(len(r["attempts"]) for r in records)
    assert calls == 2000 + 200 + 20
    workflows = [s for s in spans.get_finished_spans() if s.name == "invoke_workflow load"]
    assert len(workflows) == 2000
    assert log.stats().lost == 0
    log.close()


async def test_2000_requests_with_the_log_database_down(caplog: pytest.LogCaptureFixture) -> None:
    log = DecisionLog(UNREACHABLE, flush_interval=0.05, retry_for=0)
    llm = load_ladder(log)
    with caplog.at_level(logging.WARNING, logger="cascade_router.decision_log"):
        answers = await run_load(llm, 2000)
        log.flush(60)
    assert len(answers) == 2000
    assert all(a.content in ("a", "b", "c") for a in answers)
    stats = log.stats()
    assert stats.lost == 2000
    assert stats.written == 0
    # One warning per report interval (60 s by default), not one per lost record.
    assert len([r for r in caplog.records if "lost since the last report" in r.getMessage()]) == 1
    log.close()


def test_streams_are_logged_even_when_abandoned(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "streams.db", flush_interval=0.01)
    llm = ladder(log, [Reply("Lyon", confidence=0.2)], ["Paris is the capital of France"])
    chunks = list(llm.stream("q"))
    request_id = next(
        c.response_metadata["cascade"]["request_id"] for c in chunks if c.response_metadata.get("cascade")
    )
    stream = llm.stream("q")
    next(stream)  # the caller reads one chunk of the live rung, then walks away
    stream.close()
    assert log.flush()
    records = list(log.iter_records())
    assert records[0]["request_id"] == request_id
    assert [r["outcome"] for r in records] == ["accepted", "abandoned"]
    assert records[1]["error"].startswith("GeneratorExit")
    # The rungs that ran are in the record: the rejected cheap one and the live one cut off.
    assert [a["decision"] for a in records[1]["attempts"]] == ["escalate", "abandoned"]
    assert records[1]["attempts"][1]["cost_usd"] is None
    log.close()


def test_agent_middleware_logs_every_model_call(tmp_path: Path) -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from langchain_cascade_router import CascadeMiddleware

    @tool
    def lookup(city: str) -> str:
        """Look a city up."""
        return f"{city}: sunny"

    cheap = ScriptedChatModel(
        model_name="cheap",
        replies=[
            Reply(tool_calls=[{"name": "lookup", "args": {"city": "Paris"}}]),
            Reply("sunny", confidence=0.95),
        ],
        cycle=False,
    )
    strong = ScriptedChatModel(model_name="strong", replies=["unused"])
    log = DecisionLog(tmp_path / "agent.db", flush_interval=0.01)
    agent = create_agent(
        model=cheap,
        tools=[lookup],
        middleware=[
            CascadeMiddleware(
                rungs=[{"model": cheap, "scorer": LogprobScorer(), "threshold": 0.5}, {"model": strong}],
                decision_log=log,
                name="agent-ladder",
            )
        ],
    )
    agent.invoke({"messages": [("user", "weather in Paris?")]})
    assert log.flush()
    records = list(log.iter_records())
    assert [r["cascade"] for r in records] == ["agent-ladder", "agent-ladder"]
    assert [r["attempts"][0]["reason"] for r in records] == [
        "valid tool call",
        "score 0.950 >= threshold 0.5",
    ]
    log.close()
