"""What a request leaves behind: its decision-log record, and the errors it raises.

Built from the attempts the engine's drivers collected; nothing here calls a model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cascade_router._version import __version__
from cascade_router.attempts import Attempt, Result
from cascade_router.errors import CascadeExhaustedError, CascadeStreamError, RejectedAnswer
from cascade_router.model_io import Request, Usage
from cascade_router.observability.redaction import redact
from cascade_router.scorers import Scorer

if TYPE_CHECKING:
    from cascade_router.ladder import RungRuntime

MAX_ERROR_CHARS = 2000
"""Error texts are cut to this: a provider that answers with a 5 MB page must not make a 5 MB
log row (nor spend seconds redacting it)."""


def error_text(exc: BaseException) -> str:
    """``Type: message``, secrets redacted, at most ``MAX_ERROR_CHARS`` long."""
    # Cut to twice the limit before redacting (redaction is linear in the text), then to the
    # limit: a secret is far shorter than the limit, so one that starts inside the kept part is
    # whole when it is redacted.
    text = f"{type(exc).__name__}: {exc}"[: 2 * MAX_ERROR_CHARS]
    text = redact(text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def ladder_summary(rungs: Sequence[RungRuntime]) -> list[dict[str, Any]]:
    """The ladder as recorded in the decision log: names, models, rules; never a secret."""
    return [
        {
            "rung": r.index,
            "name": r.name,
            "provider": r.provider,
            "model": r.model,
            "threshold": r.threshold,
            "scorer": scorer_config(r.scorer),
            "timeout": r.timeout,
            "max_retries": r.max_retries,
        }
        for r in rungs
    ]


def config_hash(name: str, ladder: list[dict[str, Any]], accept_last: bool, on_exhausted: str) -> str:
    """Identifies a ladder's configuration across processes and versions of the same config."""
    payload = {"name": name, "ladder": ladder, "accept_last": accept_last, "on_exhausted": on_exhausted}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scorer_config(scorer: Scorer | None) -> dict[str, Any] | None:
    """A scorer's settings for the log and the config hash: plain values only, models by name."""
    if scorer is None:
        return None
    out: dict[str, Any] = {"kind": getattr(scorer, "kind", type(scorer).__name__)}
    for key, value in scorer:
        if key == "kind":
            continue
        if value is None or isinstance(value, str | int | float | bool):
            out[key] = redact(value) if isinstance(value, str) else value
        elif isinstance(value, Scorer):
            out[key] = scorer_config(value)
        elif isinstance(value, list | tuple) and all(isinstance(v, Scorer) for v in value):
            out[key] = [scorer_config(v) for v in value]
        else:
            name = getattr(value, "model_name", None) or getattr(value, "model", None)
            out[key] = f"{type(value).__name__}({name})" if isinstance(name, str) else type(value).__name__
    return out


def request_record(
    *,
    request_id: str,
    trace_id: str | None,
    cascade: str,
    config_hash: str,
    ladder: list[dict[str, Any]],
    created_at: datetime,
    latency_s: float,
    attempts: Sequence[Attempt],
    result: Result | None,
    error: BaseException | None,
    request: Request | None,
    store_content: bool,
    shadow_attempts: Sequence[Attempt] = (),
) -> dict[str, Any]:
    """One decision-log row. Built on the log's writer thread, off the request path: the times
    are taken when the request ends and passed in. ``shadow_attempts`` (shadow sampling) are
    stored after the live ones, marked, and count in neither the tokens nor the cost."""
    usage = Usage()
    cost: float | None = 0.0
    for a in attempts:
        usage = usage + (a.usage or Usage()) + a.scorer_usage
        c = a.total_cost_usd
        cost = None if c is None or cost is None else cost + c
    answered = result.answered_by if result is not None else None
    if result is not None:
        outcome: str = result.outcome
    elif isinstance(error, CascadeExhaustedError):
        outcome = "exhausted"
    elif error is not None and not isinstance(error, Exception):
        outcome = "abandoned"  # a cancellation, a closed stream, an interrupt
    else:
        outcome = "error"
    return {
        "request_id": request_id,
        "trace_id": trace_id,
        "created_at": created_at,
        "cascade": cascade,
        "config_hash": config_hash,
        "package_version": __version__,
        "outcome": outcome,
        "answered_rung": answered.rung if answered else None,
        "answered_name": answered.name if answered else None,
        "answered_model": answered.model if answered else None,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": cost,
        "latency_s": latency_s,
        "error": error_text(error) if error is not None and result is None else None,
        "ladder": ladder,
        "attempts": [a.to_dict() for a in [*attempts, *shadow_attempts]],
        "content": _content(request, [*attempts, *shadow_attempts]) if store_content else None,
    }


def _content(request: Request | None, attempts: Sequence[Attempt]) -> dict[str, Any]:
    """The request and each attempt's answer, for a log that stores content."""
    return {
        "request": [{"role": m.role, "content": m.content} for m in request.messages] if request else [],
        "answers": [a.output.text if a.output is not None else None for a in attempts],
    }


def midstream_error(rung: str, exc: BaseException, attempts: list[Attempt]) -> CascadeStreamError:
    return CascadeStreamError(
        f"rung {rung!r} failed after part of its answer was streamed; the answer is "
        f"incomplete and was not retried on another rung: {error_text(exc)}",
        attempts=attempts,
    )


def exhausted_error(attempts: list[Attempt]) -> CascadeExhaustedError:
    """One exception holding every attempt's error; its message lists rung, model and error."""
    exceptions: list[Exception] = []
    lines = []
    for a in attempts:
        if isinstance(a.exception, Exception) and a.decision == "error":
            exc: Exception = a.exception
        else:
            exc = RejectedAnswer(f"rung {a.rung} {a.name!r} ({a.model}): {a.reason}")
            if a.exception is not None:
                exc.__cause__ = a.exception
        exceptions.append(exc)
        what = a.error if a.decision == "error" else a.reason
        lines.append(f"rung {a.rung} {a.name!r} ({a.model}): {what}")
    message = "no rung gave an acceptable answer: " + "; ".join(lines)
    return CascadeExhaustedError(message, exceptions, attempts)
