"""The decision log under adversity: forks, locked databases, bad paths, bad feedback, and a
CLI that prints whatever the records hold (issue 10)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from cascade_router import Cascade, ConfigError
from cascade_router.cli.app import app
from cascade_router.observability.decision_log import SCHEMA_VERSION, DecisionLog
from cascade_router.testing import ScriptedBackend


def _cascade(log: DecisionLog, name: str = "c", answer: str = "ok") -> Cascade:
    return Cascade([{"model": ScriptedBackend("m", [answer]), "name": name}], decision_log=log)


def _child(path: str) -> None:
    # In the forked child: the parent's log object, used as a gunicorn or Celery worker would.
    from cascade_router.observability.decision_log import shared_log

    log = shared_log(path)
    cascade = Cascade([{"model": ScriptedBackend("m", ["child"])}], decision_log=log)
    for _ in range(3):
        cascade.invoke("q")
    log.close()


def test_a_forked_worker_writes_its_own_records(tmp_path: Path) -> None:
    from cascade_router.observability.decision_log import shared_log

    path = str(tmp_path / "fork.db")
    log = shared_log(path)
    cascade = Cascade([{"model": ScriptedBackend("m", ["parent"])}], decision_log=log)
    # The parent's writer thread is writing this record when the worker forks: a fork inside the
    # SQLite driver would leave the child deadlocked on its first connection.
    cascade.invoke("q")
    process = multiprocessing.get_context("fork").Process(target=_child, args=(path,))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    log.flush()
    outcomes = [r["answered_model"] for r in log.iter_records()]
    assert len(outcomes) == 4  # the parent's one and the child's three, none dropped
    log.close()


def test_a_transiently_locked_database_is_retried_not_dropped(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "locked.db", flush_interval=0.01, retry_for=10)
    real = log._insert
    failures = iter([True, True])

    def flaky(batch: list[dict[str, Any]]) -> None:
        if next(failures, False):
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        real(batch)

    log._insert = flaky  # type: ignore[method-assign]
    _cascade(log).invoke("q")
    assert log.flush(30)
    assert (log.stats().written, log.stats().lost) == (1, 0)
    log.close()


def test_a_sqlite_file_locked_by_another_writer_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    log = DecisionLog(path, flush_interval=0.01)
    log.engine()  # tables exist
    holder = create_engine(f"sqlite:///{path}").connect()
    holder.execute(text("BEGIN EXCLUSIVE"))
    _cascade(log).invoke("q")
    assert not log.flush(0.5)  # held: nothing written yet, nothing lost either
    assert log.stats().lost == 0
    holder.rollback()
    holder.close()
    assert log.flush(30)
    assert (log.stats().written, log.stats().lost) == (1, 0)
    log.close()


@pytest.mark.parametrize("where", ["missing/dir/log.db", "."])
def test_an_unusable_sqlite_path_fails_at_construction(tmp_path: Path, where: str) -> None:
    with pytest.raises(ConfigError, match=r"decision_log: .*(does not exist|is a directory)"):
        DecisionLog(tmp_path / where)


def test_losses_are_reported_again_after_the_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = DecisionLog(tmp_path / "l.db", max_buffer=1, report_interval=0.05)
    log.close()
    with caplog.at_level(logging.WARNING, logger="cascade_router.decision_log"):
        for _ in range(3):
            log.record({"request_id": "x"})
        import time

        time.sleep(0.1)
        log.record({"request_id": "y"})
    reports = [r.getMessage() for r in caplog.records if "lost since the last report" in r.getMessage()]
    assert len(reports) == 2
    # The first loss is said at once; the two within the interval wait for the next report.
    assert "1 record(s) lost since the last report (1 in all)" in reports[0]
    assert "3 record(s) lost since the last report (4 in all)" in reports[1]
    assert log.stats().dropped == 4


@pytest.mark.parametrize("score", [float("inf"), 42, -5, float("nan"), "good"])
def test_feedback_out_of_range_is_refused(tmp_path: Path, score: Any) -> None:
    log = DecisionLog(tmp_path / "f.db")
    result = _cascade(log).invoke("q")
    with pytest.raises(ConfigError, match="score: expected a number in"):
        log.record_feedback(result.request_id, score)
    log.close()


def test_feedback_for_an_unknown_request_is_refused(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "f.db")
    cascade = _cascade(log)
    result = cascade.invoke("q")
    cascade.record_feedback(result.request_id, True, comment="thumbs up")  # still buffered: known
    with pytest.raises(ConfigError, match="request_id: no request 'typo'"):
        cascade.record_feedback("typo", 1.0)
    log.close()


def test_the_cli_prints_bracketed_text_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "markup.db"
    log = DecisionLog(path)
    cascade = _cascade(log, name="rung[/", answer="[/INST] yes")
    result = cascade.invoke("q")
    cascade.record_feedback(result.request_id, 1.0, comment="great [/] [bold]really[/bold] [red]")
    log.close()
    runner = CliRunner()
    shown = runner.invoke(app, ["log", "show", result.request_id, "--db", str(path)], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert "rung[/" in shown.output
    assert "great [/] [bold]really[/bold] [red]" in shown.output
    for command in (["log", "list"], ["log", "stats"]):
        done = runner.invoke(app, [*command, "--db", str(path)], env={"COLUMNS": "300"})
        assert done.exit_code == 0, done.output
        assert "rung[/" in done.output


def _future_log(path: Path) -> None:
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE cascade_schema (version INTEGER PRIMARY KEY)"))
        conn.execute(text(f"INSERT INTO cascade_schema VALUES ({SCHEMA_VERSION + 1})"))
    engine.dispose()


@pytest.mark.parametrize("case", ["directory", "not sqlite", "future schema", "unreachable postgres"])
def test_the_cli_explains_an_unusable_log_in_one_line(tmp_path: Path, case: str) -> None:
    if case == "directory":
        db = str(tmp_path)
    elif case == "not sqlite":
        (tmp_path / "notes.db").write_text("this is not a database " * 100)
        db = str(tmp_path / "notes.db")
    elif case == "future schema":
        _future_log(tmp_path / "future.db")
        db = str(tmp_path / "future.db")
    else:
        db = "postgresql+psycopg://bob:hunter2secret@127.0.0.1:1/nowhere"
    done = CliRunner().invoke(app, ["log", "stats", "--db", db], env={"COLUMNS": "400"})
    assert done.exit_code == 2
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert "Traceback" not in done.output
    assert "error:" in done.output
    assert "hunter2secret" not in done.output
    if case == "future schema":
        assert "newer than this cascade-router" in done.output
        # Refused untouched: no tables of ours were created in it.
        engine = create_engine(f"sqlite:///{tmp_path / 'future.db'}")
        with engine.connect() as conn:
            tables = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
        engine.dispose()
        assert tables == {"cascade_schema"}


def test_records_pending_at_close_are_counted_as_lost(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "slow.db", flush_interval=0.01, batch_size=1)
    log._write = lambda batch: __import__("time").sleep(1)  # type: ignore[method-assign]
    for i in range(5):
        log.record({"request_id": f"r{i}"})
    log.close(timeout=0.2)
    assert log.stats().lost >= 3  # at most one batch of one was in flight when the wait ended
    assert os.getpid() == log._pid
