"""The ``cascade-router`` commands (typer + rich)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from cascade_router.cli import demo as _cli_demo
from cascade_router.cli import evaluate as _cli_eval
from cascade_router.cli import health as _cli_health
from cascade_router.cli import label as _cli_label
from cascade_router.cli import models as _cli_models
from cascade_router.cli import record as _cli_record
from cascade_router.cli import serve as _cli_serve
from cascade_router.errors import ConfigError
from cascade_router.observability.decision_log import DecisionLog, SchemaError, database_url
from cascade_router.observability.log_stats import summarize
from cascade_router.observability.redaction import redact, safe_url

# Plain help: typer's rich help shows a type beside every option, "<bool>" for a flag such as
# --local too, which reads as if the flag took a value.
app = typer.Typer(
    help="cascade-router: cheap-first model cascades.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
log_app = typer.Typer(help="Read the decision log.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(log_app, name="log")
_cli_eval.register(app)
_cli_record.register(app)
_cli_label.register(app)
_cli_label.register_log(log_app)
_cli_demo.register(app)
_cli_health.register(app)
_cli_models.register(app)
_cli_serve.register(app)


def _out() -> Console:
    # Built per command, so the terminal width (COLUMNS) is read when the command runs. No
    # markup: records hold text from models and users ("[/INST]", "[/]"), printed as it is.
    return Console(markup=False, highlight=False)


def _err() -> Console:
    return Console(stderr=True, markup=False, highlight=False)


def _fail(message: str, code: int = 2) -> NoReturn:
    _err().print(f"error: {redact(message)}", style="red")
    raise typer.Exit(code)


Db = Annotated[
    str,
    typer.Option(
        "--db", envvar="CASCADE_ROUTER_DB", help="The decision log: a SQLite file or a SQLAlchemy URL."
    ),
]


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    dataset = "dataset"


def _open(db: str) -> DecisionLog:
    """The log at ``db``, checked: every way it can be unusable is one line, not a traceback."""
    url = database_url(db)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            _fail(f"no decision log at {db}")
        if path.is_dir():
            _fail(f"{db} is a directory, not a decision log")
    try:
        log = DecisionLog(url)
        log.engine()  # connects and checks the schema now
    except (ConfigError, SchemaError) as exc:
        _fail(f"{safe_url(url)}: {exc}")
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        _fail(f"cannot read a decision log at {safe_url(url)}: {type(cause).__name__}: {cause}")
    except ImportError as exc:
        _fail(str(exc))
    return log


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


def _total(record: dict[str, object]) -> str:
    """A request's cost; "at least $x" when some attempt's cost is unknown (a timed-out call)."""
    cost = record.get("cost_usd")
    if isinstance(cost, float | int):
        return f"${cost:.6f}"
    attempts = record.get("attempts")
    known = 0.0
    for a in attempts if isinstance(attempts, list) else []:
        if isinstance(a, dict) and not a.get("shadow"):
            known += float(a.get("cost_usd") or 0.0) + float(a.get("scorer_cost_usd") or 0.0)
    return f"at least ${known:.6f} (some attempt's cost is unknown)"


@log_app.command("list")
def list_requests(
    db: Db, limit: Annotated[int, typer.Option(help="How many of the newest requests.")] = 20
) -> None:
    """The most recent requests: who answered, after how many attempts, at what cost."""
    log = _open(db)
    console = _out()
    table = Table("time", "request id", "cascade", "outcome", "answered by", "attempts", "cost", "latency")
    for r in log.recent(limit):
        table.add_row(
            r["created_at"][:19],
            r["request_id"],
            r["cascade"],
            r["outcome"],
            r["answered_model"] or "-",
            " > ".join(f"{a['name']}:{a['decision']}" for a in r["attempts"]),
            _money(r["cost_usd"]),
            f"{r['latency_s']:.3f}s",
        )
    console.print(table)


@log_app.command("show")
def show(request_id: str, db: Db) -> None:
    """Every attempt of one request, with scores, reasons, tokens and costs, and its feedback."""
    log = _open(db)
    record = log.get(request_id)
    if record is None:
        # A unique prefix is enough: `log list` shows ids cut short on narrow screens.
        matches = log.ids_starting_with(request_id)
        if len(matches) > 1:
            _fail(f"{request_id!r} is the start of more than one request id: give more of it", 1)
        record = log.get(matches[0]) if matches else None
    if record is None:
        _fail(f"no request {request_id!r} in {safe_url(database_url(db))}", 1)
    console = _out()
    console.print(
        f"{record['request_id']}  {record['created_at']}  cascade={record['cascade']}  "
        f"outcome={record['outcome']}  answered by={record['answered_model']}  "
        f"cost={_total(record)}  trace={record['trace_id'] or '-'}"
    )
    table = Table(
        "rung",
        "name",
        "model",
        "decision",
        "score",
        "threshold",
        "reason",
        "tokens in/out",
        "cost",
        "latency",
    )
    for a in record["attempts"]:
        table.add_row(
            str(a["rung"]),
            a["name"] + (" (shadow)" if a.get("shadow") else ""),
            a["model"] or "-",
            a["decision"],
            "-" if a["score"] is None else f"{a['score']:.3f}",
            "-" if a["threshold"] is None else f"{a['threshold']:g}",
            a["reason"],
            f"{a['input_tokens']}/{a['output_tokens']}",
            _money(a["cost_usd"]),
            f"{a['latency_s']:.3f}s",
        )
    console.print(table)
    for f in record["feedback"]:
        console.print(f"feedback {f['created_at'][:19]}: score={f['score']:g} {f['comment'] or ''}")


@log_app.command("export")
def export(db: Db, format: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.jsonl) -> None:
    """Every request as one JSON object per line (feedback included), oldest first, on stdout.

    --format dataset writes the evaluation dataset format instead: one item per logged request
    with stored content, one answer per rung that has a label (feedback given with rung=i, or on
    the answer itself), ready for learn, eval and calibrate."""
    log = _open(db)
    out = sys.stdout
    if format is ExportFormat.dataset:
        from cascade_router.evaluation.datasets import dataset_from_log

        data = dataset_from_log(log.iter_records())
        for item in data:
            out.write(item.model_dump_json(exclude_none=True) + "\n")
        out.flush()
        _err().print(f"{len(data)} labelled requests exported")
        return
    for record in log.iter_records():
        out.write(json.dumps(record, default=str) + "\n")
    out.flush()


_SPAN = {"m": 60, "h": 3600, "d": 86400}


def _since(text: str) -> datetime:
    unit = text[-1:]
    try:
        amount = float(text[:-1])
    except ValueError:
        amount = -1.0
    if unit not in _SPAN or amount <= 0:
        raise typer.BadParameter(f"--since {text!r}: expected a duration such as 30m, 24h or 7d")
    return datetime.now(UTC) - timedelta(seconds=amount * _SPAN[unit])


@log_app.command("drift")
def drift(
    db: Db,
    config: Annotated[
        Path, typer.Option("--config", help="The calibrated ladder (written by cascade-router calibrate).")
    ],
    since: Annotated[str, typer.Option(help="How far back: 30m, 24h, 7d.")] = "24h",
) -> None:
    """Compare logged scores with what each calibrated rung's threshold was chosen on.

    Exits 1 when a rung drifted (a shift in its score distribution or its accepted share)."""
    from cascade_router.config import load_config
    from cascade_router.observability.drift import compare

    ladder = load_config(config)
    calibrated = [(i, r) for i, r in enumerate(ladder.rungs) if r.calibration is not None]
    if not calibrated:
        _fail(f"{config}: no rung carries a calibration (write one with cascade-router calibrate)")
    log = _open(db)
    start = _since(since)
    seen: dict[int, tuple[list[float], list[bool]]] = {i: ([], []) for i, _ in calibrated}
    requests = 0
    for record in log.iter_records(since=start):
        requests += 1
        for attempt in record.get("attempts") or []:
            index = attempt.get("rung")
            score, threshold = attempt.get("score"), attempt.get("threshold")
            if (
                index in seen
                and score is not None
                and threshold is not None
                and attempt.get("method") != "validity"
            ):
                seen[index][0].append(float(score))
                seen[index][1].append(float(score) >= float(threshold))
    table = Table(title=f"Drift since {start:%Y-%m-%d %H:%M} UTC ({requests} requests)")
    for column in ("rung", "scored answers", "score PSI", "accepted", "at calibration", "verdict"):
        table.add_column(column)
    drifted = False
    for i, rung in calibrated:
        assert rung.calibration is not None
        scores, accepted = seen[i]
        name = rung.name or str(rung.model)
        if not scores:
            table.add_row(name, "0", "-", "-", f"{rung.calibration.accepted_share:.1%}", "no data")
            continue
        check = compare(
            name,
            rung.calibration.score_edges,
            rung.calibration.accepted_share,
            scores,
            accepted,
            psi_alert=rung.calibration.psi_alert,
            share_alert=rung.calibration.share_alert,
        )
        drifted = drifted or check.drifted
        table.add_row(
            name,
            str(check.answers),
            f"{check.psi:.3f}",
            f"{check.accepted_share:.1%}",
            f"{check.calibration_accepted_share:.1%}",
            ("DRIFT: " if check.drifted else "") + check.why,
        )
    _out().print(table)
    if drifted:
        raise typer.Exit(1)


@log_app.command("stats")
def stats(db: Db) -> None:
    """Share answered per rung, escalation rate, cost, and error rate per model."""
    s = summarize(_open(db).iter_records())
    console = _out()
    console.print(
        f"requests: {s.requests}   escalation rate: {s.escalation_rate:.1%}   "
        f"cost: ${s.cost_usd:.6f} (mean ${s.cost_usd / max(s.requests, 1):.6f})"
        + (f", {s.unpriced} unpriced" if s.unpriced else "")
        + f"   with feedback: {s.with_feedback}"
    )
    console.print("outcomes: " + ", ".join(f"{k} {v}" for k, v in s.outcomes.most_common()))
    answered = Table("answered by", "requests", "share")
    for name, n in s.answered_by.most_common():
        answered.add_row(name, str(n), f"{n / s.requests:.1%}")
    console.print(answered)
    models = Table("model", "calls", "errors", "error rate")
    for model, n in s.calls.most_common():
        models.add_row(model, str(n), str(s.errors[model]), f"{s.error_rate(model):.1%}")
    console.print(models)
