"""What `leadscore backtest` shows for each plan: the score distribution next to the thresholds.

Picking a warm-lead threshold is trial and error on the distribution of scores (DESIGN §1), so
the report puts percentiles, a histogram, how many contacts each threshold would select and
how many alerts it would have fired side by side, and can suggest the score that selects a
chosen top share. Pure functions on final scores: the replay that produces them lives elsewhere.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

PERCENTILES = (50, 75, 90, 95, 99)
MAX_BUCKETS = 20
BAR_WIDTH = 40
_EIGHTHS = " ▏▎▍▌▋▊▉"
"""Partial blocks by eighths of a character, so small buckets still show."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """Scores `low` to `high`, both inclusive."""

    low: int
    high: int
    count: int


@dataclass(frozen=True, slots=True)
class ScoreStats:
    """The distribution of a non-empty set of scores."""

    mean: float
    minimum: int
    maximum: int
    percentiles: tuple[tuple[int, int], ...]
    """(percentile, nearest-rank score) for each of `PERCENTILES`."""
    histogram: tuple[Bucket, ...]


@dataclass(frozen=True, slots=True)
class ThresholdReport:
    """One threshold of the plan: whom it selects now, and the alerts it would have sent."""

    name: str
    score: int
    contacts_at_or_above: int
    alerts_crossed: int
    alerts_dropped: int


@dataclass(frozen=True, slots=True)
class Suggestion:
    """The threshold that selects (at least) the top `top_pct` percent of contacts."""

    top_pct: float
    score: int
    contacts_at_or_above: int


@dataclass(frozen=True, slots=True)
class PlanReport:
    """Everything shown for one plan; `stats` and `suggestion` are None with no contacts."""

    plan: str
    contacts: int
    stats: ScoreStats | None
    thresholds: tuple[ThresholdReport, ...]
    suggestion: Suggestion | None


def build_report(
    plan: str,
    scores: Sequence[int],
    thresholds: Sequence[tuple[str, int]],
    alerts_crossed: Mapping[str, int],
    alerts_dropped: Mapping[str, int],
    *,
    suggest_top_pct: float | None = None,
) -> PlanReport:
    """The report of one plan from its contacts' final scores and its alert counts by threshold.

    A plan that scored nobody still reports its thresholds (with zero contacts), and no
    suggestion, rather than failing the whole backtest.
    """
    ordered = sorted(scores)
    suggestion = None
    if suggest_top_pct is not None and ordered:
        score = _top_score(ordered, suggest_top_pct)
        suggestion = Suggestion(suggest_top_pct, score, _at_or_above(ordered, score))
    return PlanReport(
        plan=plan,
        contacts=len(ordered),
        stats=_stats(ordered) if ordered else None,
        thresholds=tuple(
            ThresholdReport(
                name,
                score,
                _at_or_above(ordered, score),
                alerts_crossed.get(name, 0),
                alerts_dropped.get(name, 0),
            )
            for name, score in thresholds
        ),
        suggestion=suggestion,
    )


def suggest_threshold(scores: Sequence[int], top_pct: float) -> int:
    """The highest score that at least `top_pct` percent of the contacts reach.

    With N contacts and k = ceil(top_pct * N / 100), it is the k-th highest score: the largest
    s with at least k contacts at or above s. Ties at s can select more than top_pct percent
    (all of them, when all scores are equal); never fewer. `top_pct` is read as its decimal
    text, so 16.1% of 1000 contacts is 161, not 162 through binary rounding.
    Raises ValueError unless 0 < top_pct <= 100 and there is at least one score.
    """
    return _top_score(sorted(scores), top_pct)


def _top_score(ordered: Sequence[int], top_pct: float) -> int:
    if not ordered:
        raise ValueError("no scores to suggest a threshold from")
    if not 0 < top_pct <= 100:
        raise ValueError(f"top percent must be in (0, 100], got {top_pct}")
    wanted = math.ceil(Fraction(str(top_pct)) * len(ordered) / 100)
    return ordered[-wanted]


def _at_or_above(ordered: Sequence[int], score: int) -> int:
    return len(ordered) - bisect_left(ordered, score)


def _stats(ordered: Sequence[int]) -> ScoreStats:
    count = len(ordered)
    return ScoreStats(
        mean=sum(ordered) / count,
        minimum=ordered[0],
        maximum=ordered[-1],
        percentiles=tuple((p, ordered[(p * count + 99) // 100 - 1]) for p in PERCENTILES),
        histogram=_histogram(ordered),
    )


def _histogram(ordered: Sequence[int]) -> tuple[Bucket, ...]:
    return histogram(ordered, bucket_bounds(ordered[0], ordered[-1]))


def bucket_bounds(low: int, high: int) -> list[tuple[int, int]]:
    """Equal-width integer buckets from `low`, at most MAX_BUCKETS of them, covering `high`.

    One bucket per score when the range holds at most MAX_BUCKETS integers, else the narrowest
    width that needs no more (11 to 20 buckets). The last bucket may reach past `high`.
    """
    span = high - low + 1
    width = -(-span // MAX_BUCKETS)
    starts = [low + index * width for index in range(-(-span // width))]
    return [(start, start + width - 1) for start in starts]


def histogram(ordered: Sequence[int], bounds: Sequence[tuple[int, int]]) -> tuple[Bucket, ...]:
    """How many of the sorted scores fall in each of the buckets."""
    return tuple(
        Bucket(low, high, bisect_left(ordered, high + 1) - bisect_left(ordered, low))
        for low, high in bounds
    )


def render_text(reports: Sequence[PlanReport]) -> str:
    """A terminal report: per plan, summary, percentiles, histogram bars and thresholds."""
    return "\n\n".join(_render_plan(report) for report in reports) + "\n"


def _render_plan(report: PlanReport) -> str:
    lines = [f"Plan {report.plan}: {report.contacts:,} contacts scored"]
    stats = report.stats
    if stats is None:
        lines.append("  no contacts scored")
    else:
        lines.append(f"  mean {stats.mean:.2f}   min {stats.minimum:,}   max {stats.maximum:,}")
        lines.append("  " + "   ".join(f"p{p} {value:,}" for p, value in stats.percentiles))
        lines.append("")
        lines.extend(_render_histogram(stats.histogram))
    if report.thresholds:
        lines.append("")
        lines.extend(_render_thresholds(report.thresholds, report.contacts))
    if report.suggestion is not None:
        s = report.suggestion
        lines.append("")
        lines.append(
            f"  suggested threshold for the top {s.top_pct:g}%: {s.score:,}"
            f" ({s.contacts_at_or_above:,} contacts at or above,"
            f" {_percent(s.contacts_at_or_above, report.contacts)})"
        )
    return "\n".join(lines)


def _render_histogram(buckets: Sequence[Bucket]) -> list[str]:
    labels = bucket_labels(buckets)
    label_width = max(len("score"), *map(len, labels))
    peak = max(b.count for b in buckets)
    lines = [f"  {'score':>{label_width}}  contacts"]
    for label, bucket in zip(labels, buckets, strict=True):
        bar_text = bar(bucket.count, peak).ljust(BAR_WIDTH)
        lines.append(f"  {label:>{label_width}}  {bar_text} {bucket.count:,}")
    return lines


def bucket_labels(buckets: Sequence[Bucket]) -> list[str]:
    """`7` for one-score buckets, else `low .. high` aligned on both ends."""
    if all(b.low == b.high for b in buckets):
        return [f"{b.low:,}" for b in buckets]
    low_width = max(len(f"{b.low:,}") for b in buckets)
    high_width = max(len(f"{b.high:,}") for b in buckets)
    return [f"{b.low:>{low_width},} .. {b.high:>{high_width},}" for b in buckets]


def bar(count: int, peak: int, width: int = BAR_WIDTH) -> str:
    """`width` characters at `peak`, in eighths; any non-zero count shows at least one."""
    eighths = round(count * width * 8 / peak) if peak else 0
    if count and not eighths:
        eighths = 1
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def _render_thresholds(thresholds: Sequence[ThresholdReport], contacts: int) -> list[str]:
    header = ("threshold", "score", "at or above", "share", "alerts crossed", "dropped")
    rows = [
        (
            t.name,
            f"{t.score:,}",
            f"{t.contacts_at_or_above:,}",
            _percent(t.contacts_at_or_above, contacts),
            f"{t.alerts_crossed:,}",
            f"{t.alerts_dropped:,}",
        )
        for t in thresholds
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  "
        + "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def report_to_json(reports: Sequence[PlanReport]) -> dict[str, Any]:
    """The reports as JSON-ready data (`--json`); keys are stable, absent values are null."""
    return {"plans": [plan_to_json(report) for report in reports]}


def plan_to_json(report: PlanReport) -> dict[str, Any]:
    stats = report.stats
    return {
        "plan": report.plan,
        "contacts": report.contacts,
        "stats": None
        if stats is None
        else {
            "mean": stats.mean,
            "min": stats.minimum,
            "max": stats.maximum,
            "percentiles": {f"p{p}": value for p, value in stats.percentiles},
            "histogram": [asdict(bucket) for bucket in stats.histogram],
        },
        "thresholds": [asdict(threshold) for threshold in report.thresholds],
        "suggestion": None if report.suggestion is None else asdict(report.suggestion),
    }


def plot_png(reports: Sequence[PlanReport], path: Path) -> None:
    """One histogram per plan with its thresholds (solid) and the suggestion (dashed) as lines.

    matplotlib is optional (the `plot` extra) and slow to import, so it is imported here;
    the object API with the Agg canvas leaves pyplot's global state alone.
    """
    if not reports:
        raise ValueError("no plans to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(9, 3.2 * len(reports)), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, report in zip(
        figure.subplots(len(reports), 1, squeeze=False)[:, 0], reports, strict=True
    ):
        axes.set_title(f"{report.plan}: {report.contacts:,} contacts")
        if report.stats is None:
            axes.text(0.5, 0.5, "no contacts scored", ha="center", transform=axes.transAxes)
            axes.set_axis_off()
            continue
        buckets = report.stats.histogram
        axes.bar(
            [b.low for b in buckets],
            [b.count for b in buckets],
            width=[b.high - b.low + 1 for b in buckets],
            align="edge",
            color="C0",
            edgecolor="white",
        )
        for colour, threshold in enumerate(report.thresholds, start=1):  # C0 is the bars'
            label = f"{threshold.name} ≥ {threshold.score}"
            axes.axvline(threshold.score, color=f"C{colour}", label=label)
        if report.suggestion is not None:
            s = report.suggestion
            label = f"top {s.top_pct:g}% ≥ {s.score}"
            axes.axvline(s.score, color="black", linestyle="--", label=label)
        if report.thresholds or report.suggestion is not None:
            axes.legend()
        axes.set_xlabel("score")
        axes.set_ylabel("contacts")
    figure.savefig(path, format="png")
