"""What `leadscore plans evaluate` prints, writes as JSON and draws: pure functions of an
`Evaluation` (the replays that make one are in `streams.backtest.evaluate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streams.backtest.evaluate import Evaluation, PlanEvaluation
from streams.backtest.metrics import AtThreshold
from streams.models.times import format_time


def render_text(evaluation: Evaluation) -> str:
    return "\n\n".join([_summary(evaluation), *map(render_plan, evaluation.plans)]) + "\n"


def _summary(e: Evaluation) -> str:
    lines = [
        f"evaluated {e.contacts:,} contacts of {e.events}: {e.converters:,} converted"
        f" (base rate {percent(e.converters / e.contacts if e.contacts else None)})",
        f"  outcomes {e.outcomes}: {e.conversions:,} conversions, {e.rejected_rows:,} rejected"
        f" rows, {e.unknown_contacts:,} naming no contact of the events",
    ]
    lines += [f"  {row}" for row in e.rejected_sample]
    horizon = "at conversion" if e.horizon == 0 else f"{_days(e.horizon)} before conversion"
    end = "-" if e.end is None else format_time(e.end)
    lines.append(
        f"  scores read {horizon} for converters"
        f" ({e.unseen_converters:,} had no event by then), at {end} for the others"
        + ("" if e.as_of is not None else " (the last event)")
    )
    return "\n".join(lines)


def render_plan(p: PlanEvaluation) -> str:
    lines = [f"Plan {p.plan} ({p.file}): ROC AUC {_num(p.auc, '.3f')}"]
    if not p.contacts:
        return lines[0] + "\n  no contacts"
    lines += table(
        ("top", "contacts", "converted", "capture", "lift", "score at least"),
        [
            (f"{t.pct:g}%", f"{t.contacts:,}", f"{t.converters:,.1f}", percent(t.capture),
             times(t.lift), _num(t.score, ","))
            for t in p.top
        ],
    )  # fmt: skip
    lines.append("")
    lines += table(
        ("score band", "contacts", "converted", "rate", "lift"),
        [
            (f"{b.low:,} .. {b.high:,}" if b.low != b.high else f"{b.low:,}", f"{b.contacts:,}",
             f"{b.converters:,}", percent(b.rate), times(b.lift))
            for b in p.bands
        ],
    )  # fmt: skip
    if p.thresholds:
        lines.append("")
        lines += table(
            ("threshold", "score", "at or above", "converted", "precision", "recall", "lift"),
            [(t.name, *_threshold_cells(t.stats)) for t in p.thresholds],
        )
    if p.capacity is not None:
        c = p.capacity
        if c.stats is None:
            lines.append(f"  for {c.capacity}: no candidate threshold sends so few alerts")
        else:
            lines.append(
                f"  for {c.capacity}: threshold {c.stats.score:,}, {c.alerts_per_week:,.1f}"
                f" alerts a week in the backtest ({c.alerts:,} in all); {selects(c.stats)}"
            )
    if p.precision_target is not None:
        if p.precision is None:
            lines.append(
                f"  for a precision of {percent(p.precision_target)}: no threshold reaches it"
            )
        else:
            lines.append(
                f"  for a precision of {percent(p.precision_target)}: threshold"
                f" {p.precision.score:,}; {selects(p.precision)}"
            )
    return "\n".join(lines)


def selects(stats: AtThreshold) -> str:
    return (
        f"at the cutoffs {stats.contacts:,} contacts at or above, precision"
        f" {percent(stats.precision)}, recall {percent(stats.recall)}"
    )


def _threshold_cells(stats: AtThreshold) -> tuple[str, ...]:
    return (
        f"{stats.score:,}",
        f"{stats.contacts:,}",
        f"{stats.converters:,}",
        percent(stats.precision),
        percent(stats.recall),
        times(stats.lift),
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Indented lines of aligned columns, the first `left` left-aligned and the others right."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  "
        + "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in (header, *rows)
    ]


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} days" if days != 1 else "1 day"


def to_json(evaluation: Evaluation) -> dict[str, Any]:
    """The same content for machines: keys stable, absent values null, times RFC 3339."""
    document = asdict(evaluation)
    for key in ("as_of", "end"):
        value = document[key]
        document[key] = None if value is None else format_time(value)
    document["base_rate"] = (
        evaluation.converters / evaluation.contacts if evaluation.contacts else None
    )
    for plan in document["plans"]:
        del plan["gains"]
    return document


def plot_png(evaluation: Evaluation, path: Path) -> None:
    """Per plan, a lift chart (lift of the top share against the share, 1 is chance) and the
    conversion rate per score band against the base rate. matplotlib is the `plot` extra."""
    plans = evaluation.plans
    if not plans:
        raise ValueError("no plans to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(11, 3.4 * len(plans)), layout="constrained")
    FigureCanvasAgg(figure)
    for (lift_axes, band_axes), plan in zip(
        figure.subplots(len(plans), 2, squeeze=False), plans, strict=True
    ):
        title = f"{plan.plan} ({plan.file}), AUC {_num(plan.auc, '.3f')}"
        shares = [g for g in plan.gains if g.lift is not None]
        lift_axes.plot([g.pct for g in shares], [g.lift for g in shares], marker="o")
        lift_axes.axhline(1.0, color="grey", linestyle="--", label="chance")
        lift_axes.set_title(f"lift: {title}")
        lift_axes.set_xlabel("top % of contacts by score")
        lift_axes.set_ylabel("conversion rate / base rate")
        lift_axes.legend()
        labels = [f"{b.low}..{b.high}" if b.low != b.high else f"{b.low}" for b in plan.bands]
        band_axes.bar(range(len(plan.bands)), [100 * b.rate for b in plan.bands], color="C0")
        band_axes.set_xticks(range(len(plan.bands)), labels, rotation=45, ha="right")
        if plan.base_rate is not None:
            band_axes.axhline(100 * plan.base_rate, color="C1", label="base rate")
            band_axes.legend()
        band_axes.set_title("conversion per score band")
        band_axes.set_ylabel("converted %")
    figure.savefig(path, format="png")
