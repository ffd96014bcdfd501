"""`leadscore plans diff OLD.yaml NEW.yaml EVENTS`: what a plan change would do, on real history.

The same events are replayed through both plan sets (two backtests, `--jobs` and all), and
each plan, matched by name, is compared: the score distributions side by side, who enters and
who leaves each threshold (by final score), the alerts only one side would have sent, and the
contacts whose score moves most. A plan on one side only is reported as added or removed,
compared with nobody (no contact above its thresholds, no alerts) on the other side.

Pure functions on two `Backtest`s: the replays live in `streams.backtest.parallel`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from streams.backtest.parallel import Backtest
from streams.backtest.report import (
    Bucket,
    PlanReport,
    bar,
    bucket_bounds,
    bucket_labels,
    histogram,
    plan_to_json,
)
from streams.models.outputs import THRESHOLD_CROSSED, Output
from streams.models.plans import Plan, PlanSet

SAMPLE = 5
"""Contact ids shown per threshold entered or left, and alerts per kind sent by one side."""
TOP = 10
"""Contacts shown whose score changed most."""
WIDTH = 80
"""The text report fits a terminal this wide."""

Status = Literal["both", "added", "removed"]
"""Where the plan is: in both plan sets (changed or not), only the new one, only the old one."""
AlertKey = tuple[str, str, str, str]
"""What makes two alerts the same alert on both sides: contact, type, threshold, cause."""


@dataclass(frozen=True, slots=True)
class ThresholdDiff:
    """One threshold, by name: its score and whom it selects on each side (None: absent)."""

    name: str
    score_before: int | None
    score_after: int | None
    at_or_above_before: int
    at_or_above_after: int
    entered: int
    left: int
    entered_sample: tuple[str, ...]
    left_sample: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlertSample:
    contact_id: str
    time: str
    score: int


@dataclass(frozen=True, slots=True)
class AlertDiff:
    """Alerts of one threshold and kind (`crossed`/`dropped`) that only one side sent, and
    the contacts that only one side sent any such alert (the others got theirs at another
    event)."""

    threshold: str
    kind: str
    only_before: int
    only_after: int
    only_before_sample: tuple[AlertSample, ...]
    only_after_sample: tuple[AlertSample, ...]
    contacts_only_before: int
    contacts_only_after: int


@dataclass(frozen=True, slots=True)
class ScoreChange:
    contact_id: str
    before: int
    after: int
    change: int


@dataclass(frozen=True, slots=True)
class PlanDiff:
    """One plan's comparison; a side is None where the plan is not in that plan set."""

    plan: str
    status: Status
    before: PlanReport | None
    after: PlanReport | None
    histogram: tuple[tuple[Bucket, Bucket], ...]
    """Before and after over the same buckets, so the bars compare."""
    thresholds: tuple[ThresholdDiff, ...]
    alerts: tuple[AlertDiff, ...]
    contacts_changed: int
    top_changes: tuple[ScoreChange, ...]


def diff_plans(
    old: tuple[Backtest, PlanSet, Sequence[PlanReport]],
    new: tuple[Backtest, PlanSet, Sequence[PlanReport]],
    *,
    sample: int = SAMPLE,
    top: int = TOP,
) -> list[PlanDiff]:
    """Each plan of either side, old plans in their order, then the plans only the new has.

    A side is its backtest, its plan set and the backtest's reports of it
    (`streams.backtest.cli.plan_reports`)."""
    sides = [_Side(*old), _Side(*new)]
    names = list(dict.fromkeys(plan.name for side in sides for plan in side.plans))
    return [_diff_plan(name, *sides, sample=sample, top=top) for name in names]


class _Side:
    """One plan set's backtest, looked up by plan name."""

    def __init__(self, result: Backtest, plans: PlanSet, reports: Sequence[PlanReport]) -> None:
        self.plans = list(plans)
        self.result = result
        self._index = {plan.name: index for index, plan in enumerate(self.plans)}
        self._reports = {report.plan: report for report in reports}

    def plan(self, name: str) -> Plan | None:
        index = self._index.get(name)
        return None if index is None else self.plans[index]

    def report(self, name: str) -> PlanReport | None:
        return self._reports.get(name)

    def scores(self, name: str) -> dict[str, int]:
        index = self._index.get(name)
        if index is None:
            return {}
        return {contact_id: scores[index] for contact_id, scores in self.result.scores}

    def alerts(self, name: str) -> dict[AlertKey, Output]:
        return {
            (alert.contact_id, alert.type, alert.discriminator, alert.cause.identity): alert
            for alert in self.result.alerts
            if alert.data["plan"] == name
        }


def _diff_plan(name: str, old: _Side, new: _Side, *, sample: int, top: int) -> PlanDiff:
    before, after = old.scores(name), new.scores(name)
    old_plan, new_plan = old.plan(name), new.plan(name)
    status: Status = "added" if old_plan is None else "removed" if new_plan is None else "both"
    changes = sorted(
        (
            ScoreChange(contact_id, score, after[contact_id], after[contact_id] - score)
            for contact_id, score in before.items()
            if contact_id in after and after[contact_id] != score
        ),
        key=lambda change: (-abs(change.change), change.contact_id),
    )
    thresholds = _thresholds(old_plan, new_plan, before, after, sample)
    return PlanDiff(
        plan=name,
        status=status,
        before=old.report(name),
        after=new.report(name),
        histogram=_shared_histogram(before.values(), after.values()),
        thresholds=thresholds,
        alerts=_alerts(old.alerts(name), new.alerts(name), [t.name for t in thresholds], sample),
        contacts_changed=len(changes),
        top_changes=tuple(changes[:top]),
    )


def _shared_histogram(
    before: Iterable[int], after: Iterable[int]
) -> tuple[tuple[Bucket, Bucket], ...]:
    old, new = sorted(before), sorted(after)
    both = [score for scores in (old, new) if scores for score in (scores[0], scores[-1])]
    if not both:
        return ()
    bounds = bucket_bounds(min(both), max(both))
    return tuple(zip(histogram(old, bounds), histogram(new, bounds), strict=True))


def _thresholds(
    old_plan: Plan | None,
    new_plan: Plan | None,
    before: Mapping[str, int],
    after: Mapping[str, int],
    sample: int,
) -> tuple[ThresholdDiff, ...]:
    old_scores = {t.name: t.score for t in old_plan.thresholds} if old_plan else {}
    new_scores = {t.name: t.score for t in new_plan.thresholds} if new_plan else {}
    diffs = []
    for name in dict.fromkeys([*old_scores, *new_scores]):
        was = _at_or_above(before, old_scores.get(name))
        now = _at_or_above(after, new_scores.get(name))
        entered, left = sorted(now - was), sorted(was - now)
        diffs.append(
            ThresholdDiff(
                name=name,
                score_before=old_scores.get(name),
                score_after=new_scores.get(name),
                at_or_above_before=len(was),
                at_or_above_after=len(now),
                entered=len(entered),
                left=len(left),
                entered_sample=tuple(entered[:sample]),
                left_sample=tuple(left[:sample]),
            )
        )
    return tuple(diffs)


def _at_or_above(scores: Mapping[str, int], threshold: int | None) -> set[str]:
    if threshold is None:
        return set()
    return {contact_id for contact_id, score in scores.items() if score >= threshold}


def _alerts(
    before: Mapping[AlertKey, Output],
    after: Mapping[AlertKey, Output],
    thresholds: Sequence[str],
    sample: int,
) -> tuple[AlertDiff, ...]:
    """Alerts are the same on both sides when the same cause moved the same contact across
    the same threshold (by name) the same way: their ids are then equal too. Listed in the
    order of `thresholds`, crossed before dropped."""
    order = {name: index for index, name in enumerate(thresholds)}
    only_before = [alert for key, alert in before.items() if key not in after]
    only_after = [alert for key, alert in after.items() if key not in before]
    kinds = dict.fromkeys(_kind(alert) for alert in (*only_before, *only_after))
    diffs = []
    for threshold, kind in kinds:
        olds = [a for a in only_before if _kind(a) == (threshold, kind)]
        news = [a for a in only_after if _kind(a) == (threshold, kind)]
        alerted_before = {a.contact_id for a in before.values() if _kind(a) == (threshold, kind)}
        alerted_after = {a.contact_id for a in after.values() if _kind(a) == (threshold, kind)}
        diffs.append(
            AlertDiff(
                threshold,
                kind,
                len(olds),
                len(news),
                tuple(_sample(alert) for alert in olds[:sample]),
                tuple(_sample(alert) for alert in news[:sample]),
                len(alerted_before - alerted_after),
                len(alerted_after - alerted_before),
            )
        )
    return tuple(sorted(diffs, key=lambda d: (order.get(d.threshold, len(order)), d.kind)))


def _kind(alert: Output) -> tuple[str, str]:
    return alert.discriminator, "crossed" if alert.type == THRESHOLD_CROSSED else "dropped"


def _sample(alert: Output) -> AlertSample:
    return AlertSample(alert.contact_id, alert.cloudevent["time"], alert.data["score"])


# --- text ------------------------------------------------------------------------------------


def render_text(diffs: Sequence[PlanDiff], old_name: str, new_name: str) -> str:
    """Per plan: distributions, thresholds entered and left, one-sided alerts, top changes."""
    return "\n\n".join(_render_plan(diff, old_name, new_name) for diff in diffs) + "\n"


def _render_plan(diff: PlanDiff, old_name: str, new_name: str) -> str:
    where = {"both": "", "added": f" (added: only in {new_name})"}
    where["removed"] = f" (removed: only in {old_name})"
    lines = [f"Plan {diff.plan}{where[diff.status]}"]
    lines += _render_stats(diff.before, diff.after)
    if diff.histogram:
        lines.append("")
        lines += _render_histogram(diff.histogram)
    if diff.thresholds:
        lines.append("")
        lines += _render_thresholds(diff.thresholds)
    lines.append("")
    lines += _render_alerts(diff.alerts)
    if diff.status == "both":
        lines.append("")
        lines += _render_changes(diff)
    return "\n".join(lines)


def _render_stats(before: PlanReport | None, after: PlanReport | None) -> list[str]:
    header = ["", "contacts", "mean", "min", "max", *(f"p{p}" for p in _percentiles(before, after))]
    rows = [header]
    for label, report in (("before", before), ("after", after)):
        if report is None or report.stats is None:
            rows.append([label, "-" if report is None else f"{report.contacts:,}"])
            continue
        stats = report.stats
        rows.append(
            [
                label,
                f"{report.contacts:,}",
                f"{stats.mean:,.2f}",
                f"{stats.minimum:,}",
                f"{stats.maximum:,}",
                *(f"{value:,}" for _, value in stats.percentiles),
            ]
        )
    return _table(rows)


def _percentiles(*reports: PlanReport | None) -> list[int]:
    for report in reports:
        if report is not None and report.stats is not None:
            return [p for p, _ in report.stats.percentiles]
    return []


def _render_histogram(buckets: Sequence[tuple[Bucket, Bucket]]) -> list[str]:
    labels = bucket_labels([old for old, _ in buckets])
    label_width = max(len("score"), *map(len, labels))
    count_width = max(len(f"{b.count:,}") for pair in buckets for b in pair)
    # "  label  BAR count  BAR count" in WIDTH columns
    bar_width = min(30, (WIDTH - 2 - label_width - 2 - 2 * (count_width + 1) - 2) // 2)
    peak = max(b.count for pair in buckets for b in pair)
    column = bar_width + 1 + count_width
    lines = [f"  {'score':>{label_width}}  {'before':<{column}}  after"]
    for label, (old, new) in zip(labels, buckets, strict=True):
        cells = [
            f"{bar(b.count, peak, bar_width):<{bar_width}} {b.count:>{count_width},}"
            for b in (old, new)
        ]
        lines.append(f"  {label:>{label_width}}  {cells[0]}  {cells[1]}")
    return lines


def _render_thresholds(thresholds: Sequence[ThresholdDiff]) -> list[str]:
    rows = [["threshold", "score", "at or above", "entered", "left"]]
    samples = []
    for t in thresholds:
        rows.append(
            [
                t.name,
                _before_after(t.score_before, t.score_after),
                _before_after(t.at_or_above_before, t.at_or_above_after),
                f"{t.entered:,}",
                f"{t.left:,}",
            ]
        )
        samples += _listed(f"entered {t.name}", t.entered, t.entered_sample)
        samples += _listed(f"left {t.name}", t.left, t.left_sample)
    return _table(rows) + samples


def _render_alerts(alerts: Sequence[AlertDiff]) -> list[str]:
    if not alerts:
        return ["  alerts: the same on both sides"]
    rows = [["one side only", "alerts before", "after", "contacts before", "after"]]
    samples = []
    for a in alerts:
        rows.append(
            [
                f"{a.threshold} {a.kind}",
                f"{a.only_before:,}",
                f"{a.only_after:,}",
                f"{a.contacts_only_before:,}",
                f"{a.contacts_only_after:,}",
            ]
        )
        kind = f"{a.threshold} {a.kind}"
        samples += _listed(f"before only, {kind}", a.only_before, _dated(a.only_before_sample))
        samples += _listed(f"after only, {kind}", a.only_after, _dated(a.only_after_sample))
    return _table(rows) + samples


def _dated(alerts: Sequence[AlertSample]) -> list[str]:
    return [f"{alert.contact_id} {alert.time[:10]}" for alert in alerts]


def _render_changes(diff: PlanDiff) -> list[str]:
    if not diff.top_changes:
        return ["  scores: the same for every contact"]
    shown = len(diff.top_changes)
    lines = [
        f"  largest changes ({shown} of {diff.contacts_changed:,} contacts whose score changed)"
    ]
    rows = [["contact", "before", "after", "change"]]
    rows += [
        [c.contact_id, f"{c.before:,}", f"{c.after:,}", f"{c.change:+,}"] for c in diff.top_changes
    ]
    return lines + _table(rows)


def _before_after(before: int | None, after: int | None) -> str:
    if before == after:
        return f"{before:,}"
    return f"{'-' if before is None else f'{before:,}'} → {'-' if after is None else f'{after:,}'}"


def _listed(head: str, count: int, items: Sequence[str]) -> list[str]:
    """`head (first 2 of 7): a, b` in lines of at most WIDTH columns, never breaking an
    item; nothing without items."""
    if not items:
        return []
    more = f" (first {len(items)} of {count:,})" if count > len(items) else ""
    lines = [f"    {head}{more}:"]
    for item in items:
        if len(lines[-1]) + len(item) + 2 > WIDTH:
            lines[-1] += ","
            lines.append("      " + item)
        else:
            lines[-1] += (" " if lines[-1].endswith(":") else ", ") + item
    return lines


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows under a header, the first column left-aligned, the others right-aligned."""
    columns = max(len(row) for row in rows)
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(columns)]
    return [
        "  "
        + "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


# --- JSON and picture ------------------------------------------------------------------------


def diff_to_json(diffs: Sequence[PlanDiff]) -> dict[str, Any]:
    """The comparison as JSON-ready data (`--json`): what the text shows, samples in full."""
    return {
        "plans": [
            {
                "plan": diff.plan,
                "status": diff.status,
                "before": None if diff.before is None else plan_to_json(diff.before),
                "after": None if diff.after is None else plan_to_json(diff.after),
                "histogram": [
                    {"low": old.low, "high": old.high, "before": old.count, "after": new.count}
                    for old, new in diff.histogram
                ],
                "thresholds": [asdict(t) for t in diff.thresholds],
                "alerts": [asdict(a) for a in diff.alerts],
                "contacts_changed": diff.contacts_changed,
                "top_changes": [asdict(c) for c in diff.top_changes],
            }
            for diff in diffs
        ]
    }


def plot_png(diffs: Sequence[PlanDiff], path: Path) -> None:
    """Per plan, both distributions over the same buckets (before filled grey, after a black
    outline) and each threshold as a line, dashed before, solid after; matplotlib (the `plot`
    extra) is imported here, as in `streams.backtest.report.plot_png`."""
    if not diffs:
        raise ValueError("no plans to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(9, 3.2 * len(diffs)), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, diff in zip(figure.subplots(len(diffs), 1, squeeze=False)[:, 0], diffs, strict=True):
        axes.set_title(
            f"{diff.plan}: before and after"
            + ("" if diff.status == "both" else f" ({diff.status})")
        )
        if diff.histogram:
            edges = [old.low for old, _ in diff.histogram] + [diff.histogram[-1][0].high + 1]
            befores = [old.count for old, _ in diff.histogram]
            afters = [new.count for _, new in diff.histogram]
            axes.stairs(befores, edges, fill=True, color="0.75", label="before")
            axes.stairs(afters, edges, color="black", linewidth=1.5, label="after")
        for colour, t in enumerate(diff.thresholds):
            lines = [(t.score_before, "--", " before"), (t.score_after, "-", " after")]
            if t.score_before == t.score_after:
                lines = [(t.score_after, "-", "")]
            for score, style, side in lines:
                if score is not None:
                    label = f"{t.name} ≥ {score:,}{side}"
                    axes.axvline(score, color=f"C{colour}", linestyle=style, label=label)
        axes.legend(fontsize="small")
        axes.set_xlabel("score")
        axes.set_ylabel("contacts")
    figure.savefig(path, format="png")
