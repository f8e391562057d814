"""The small things that cost a newcomer time (issue 11): the CLI's help and errors, log ids cut
short, the local server script, and free local models."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_router import Cascade
from cascade_router.cli.app import app
from cascade_router.config import Rung
from cascade_router.testing import Reply, ScriptedBackend

ROOT = Path(__file__).resolve().parent.parent


def test_flags_show_no_value_in_help() -> None:
    out = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "120"})
    assert out.exit_code == 0, out.output
    assert "<bool>" not in out.output
    local = next(line for line in out.output.splitlines() if "--local" in line and "Run live" in line)
    assert local.split()[0] == "--local"
    assert "<str>" in out.output  # options that take a value still say what kind


def test_demo_local_without_a_server_says_how_to_start_one() -> None:
    out = CliRunner().invoke(app, ["demo", "--local", "--url", "http://127.0.0.1:9/v1"])
    assert out.exit_code == 1
    assert "no LLM server answers at http://127.0.0.1:9/v1" in out.output
    assert "python scripts/local_llm.py serve" in out.output
    assert "Traceback" not in out.output
    assert len(out.output.splitlines()) <= 3


def test_log_show_takes_a_unique_prefix(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    cascade = Cascade([{"model": ScriptedBackend("m", [Reply("a")])}], decision_log=db, tracing=False)
    # 17 hex ids: two of them share their first character (pigeonhole)
    ids = [cascade.invoke("q").request_id for _ in range(17)]
    cascade.engine.decision_log.flush(10)  # type: ignore[union-attr]
    runner = CliRunner()
    env = {"COLUMNS": "300"}
    shown = runner.invoke(app, ["log", "show", ids[0][:10], "--db", str(db)], env=env)
    assert shown.exit_code == 0, shown.output
    assert ids[0] in shown.output
    ambiguous = runner.invoke(app, ["log", "show", "", "--db", str(db)], env=env)
    assert ambiguous.exit_code == 1
    # a prefix two ids share is refused, naming the problem
    common = next(a[0] for a in ids if sum(b[0] == a[0] for b in ids) > 1)
    both = runner.invoke(app, ["log", "show", common, "--db", str(db)], env=env)
    assert both.exit_code == 1
    assert "more than one request id" in both.output
    cascade.close()


def test_a_prefix_is_matched_literally(tmp_path: Path) -> None:

    cascade = Cascade(
        [{"model": ScriptedBackend("m", [Reply("a")])}], decision_log=tmp_path / "l.db", tracing=False
    )
    cascade.invoke("q")
    log = cascade.engine.decision_log
    assert log is not None
    log.flush(10)
    assert log.ids_starting_with("%") == []
    assert log.ids_starting_with("_") == []
    cascade.close()


@pytest.mark.parametrize("free", [0, 0.0, "free", "FREE"])
def test_price_zero_is_free_not_unknown(free: object) -> None:
    rung = Rung(model="x", price=free)
    assert rung.price is not None
    assert rung.price.input_per_mtok == rung.price.output_per_mtok == 0
    cascade = Cascade([{"model": ScriptedBackend("local-model", [Reply("a")]), "price": free}], tracing=False)
    assert cascade.invoke("q").cost_usd == 0.0
    unknown = Cascade([{"model": ScriptedBackend("local-model", [Reply("a")])}], tracing=False)
    assert unknown.invoke("q").cost_usd is None


def test_a_nonzero_scalar_price_is_refused() -> None:
    with pytest.raises(ValueError, match="needs both parts"):
        Rung(model="x", price=3)


def test_local_llm_serve_refuses_a_port_in_use() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import local_llm

    if local_llm.missing():
        pytest.skip(f"no local LLM server here: {local_llm.missing()}")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} is already in use"):
            local_llm.start(port=port)
