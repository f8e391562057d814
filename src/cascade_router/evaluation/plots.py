"""The cost-quality plot of an evaluation (matplotlib; ``pip install 'cascade-router[eval]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cascade_router.evaluation.metrics import Point, Report


def plot_report(report: Report, path: str | Path, *, title: str | None = None) -> Path:
    """Quality against mean cost per request: the ladder's threshold sweep, random and oracle
    scorers, and the cheap-only, strong-only and configured points."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need: pip install 'cascade-router[eval]'") from exc

    def xy(points: Sequence[Point]) -> tuple[list[float], list[float]]:
        kept = [p for p in points if p.cost_usd is not None]
        return [p.cost_usd for p in kept], [p.quality * 100 for p in kept]  # type: ignore[misc]

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for points, label, style in (
        (report.curve, f"cascade ({' > '.join(report.ladder)})", "o-"),
        (report.random_curve, "random escalation", "s--"),
        (report.oracle_curve, "oracle (knows wrong answers)", "^:"),
    ):
        if points:
            ax.plot(*xy(points), style, label=label, markersize=4)
    for key, marker in (("cheap_only", "D"), ("strong_only", "*")):
        ref = report.references[key]
        if ref.cost_usd is not None:
            ax.plot([ref.cost_usd], [ref.quality * 100], marker, markersize=11, label=key.replace("_", " "))
    if report.configured.cost_usd is not None:
        ax.plot(
            [report.configured.cost_usd],
            [report.configured.quality * 100],
            "P",
            markersize=11,
            label="configured thresholds",
        )
    ax.set_xlabel("mean cost per request (USD)")
    ax.set_ylabel("quality (% correct)")
    ax.set_title(title or f"{report.dataset}: {report.items} items")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
