"""`leadscore explain CONTACT --plans plans.yaml EVENTS`: one contact's ledger from a replay.

Each score change of the contact, per plan, with what caused it (an event or a timer), the
points each rule gained or lost in it and the score before and after: the core's own score
updates, read as `streams.models.ledger` reads them, not a second computation.

Contacts are independent, so replaying only this contact's events gives exactly the
backtest's outputs for it, as long as it is advanced to the same end: `--until`, or the time of
the file's last valid event, as the backtest does. So every line is still decoded (about 3 µs
a line), but only the contact's events are scored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.backtest.cli import until_argument
from streams.backtest.replay import (
    FailedEvent,
    RejectedLine,
    ReplayPass,
    in_time_order,
    read_lines,
    valid_events,
)
from streams.models.events import TrackingEvent, format_time
from streams.models.ledger import Ledger, format_cause, format_points
from streams.models.outputs import THRESHOLD_CROSSED, Output
from streams.scoring import PlanSet, load_plans


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    explain = subparsers.add_parser(
        "explain", help="replay one contact's events and show each score change and its cause"
    )
    explain.add_argument("contact", help="the contact id (the events' subject)")
    explain.add_argument("events", type=Path, help="JSONL(.gz), one structured CloudEvent a line")
    explain.add_argument("--plans", type=Path, required=True, help="plans YAML file")
    explain.add_argument(
        "--until",
        type=until_argument,
        help="RFC 3339 time to advance to (default: the file's last event, as the backtest)",
    )
    explain.add_argument("--json", action="store_true", help="machine-readable ledger")
    explain.set_defaults(handler=run_explain)


@dataclass(frozen=True, slots=True)
class Change:
    """One score change in one plan: a score update of the contact, with its rules' points."""

    plan: str
    time: str
    cause: Mapping[str, Any]
    points: dict[str, int]
    score: int
    previous_score: int
    plan_version: str | None
    alerts: tuple[str, ...] = ()
    """The thresholds it moved the contact across, as `crossed warm` or `dropped hot`."""


@dataclass(frozen=True, slots=True)
class Explanation:
    """The contact's changes in the order the core sent them, and the times it was erased."""

    contact_id: str
    events: int
    until: float | None
    changes: list[Change] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)
    failed: list[FailedEvent] = field(default_factory=list)


def explain_file(
    path: Path, contact_id: str, plans: PlanSet, until: float | None = None
) -> Explanation:
    """Replay the contact's events of a JSONL(.gz) as `backtest` replays the whole file."""
    rejected: list[RejectedLine] = []
    events: list[tuple[int, TrackingEvent]] = []
    last: float | None = None
    for number, event in valid_events(read_lines(path), rejected):
        if last is None or event.time > last:
            last = event.time
        if event.subject == contact_id:
            events.append((number, event))
    run = ReplayPass(plans, safe=True, keep_updates=True)
    for _, event in in_time_order(events):  # the backtest's order, for this contact's share
        run.score(event)
    end = until if until is not None else last
    if end is not None and contact_id in run.result.states:
        run.advance(contact_id, end)
    changes, erased = ledger_of(run.result.updates or [], run.result.alerts)
    return Explanation(contact_id, len(events), end, changes, erased, rejected, run.result.failed)


def ledger_of(
    updates: Iterable[Output], alerts: Iterable[Output] = ()
) -> tuple[list[Change], list[str]]:
    """One contact's score changes from its score updates, in the order they were sent, each
    with the alerts sent with it (same plan, cause and score); and the times it was erased."""
    crossings: dict[tuple[str, str, int], list[str]] = {}
    for alert in alerts:
        key = (alert.source, alert.cause.identity, alert.data["score"])
        verb = "crossed" if alert.type == THRESHOLD_CROSSED else "dropped"
        crossings.setdefault(key, []).append(f"{verb} {alert.discriminator}")
    ledger = Ledger()
    changes: list[Change] = []
    erased: list[str] = []
    for update in updates:
        data = update.data
        points = ledger.record(update.type, data)
        time = update.cloudevent["time"]
        if points is None:
            erased.append(time)
            continue
        changes.append(
            Change(
                plan=data["plan"],
                time=time,
                cause=data["cause"],
                points=points,
                score=data["score"],
                previous_score=data["previous_score"],
                plan_version=data.get("plan_version"),
                alerts=tuple(
                    crossings.get((update.source, update.cause.identity, data["score"]), ())
                ),
            )
        )
    return changes, erased


def run_explain(args: argparse.Namespace) -> int:
    plans = load_plans(args.plans)
    explanation = explain_file(args.events, args.contact, plans, args.until)
    if not explanation.events:
        print(f"leadscore explain: no events of {args.contact!r} in {args.events}", file=sys.stderr)
        return 1
    if args.json:
        document = orjson.dumps(to_json(explanation), option=orjson.OPT_INDENT_2)
        sys.stdout.write(document.decode() + "\n")
    else:
        sys.stdout.write(render_text(explanation, [plan.name for plan in plans]))
    return 0


def to_json(explanation: Explanation) -> dict[str, Any]:
    return {
        "contact_id": explanation.contact_id,
        "events": explanation.events,
        "until": None if explanation.until is None else format_time(explanation.until),
        "changes": [
            {
                "plan": change.plan,
                "time": change.time,
                "cause": change.cause,
                "points": change.points,
                "score": change.score,
                "previous_score": change.previous_score,
                "alerts": list(change.alerts),
                **({} if change.plan_version is None else {"plan_version": change.plan_version}),
            }
            for change in explanation.changes
        ],
        "erased": explanation.erased,
        "rejected_lines": len(explanation.rejected),
        "scoring_errors": [
            {"event_id": None if f.event is None else f.event.id, "message": f.message}
            for f in explanation.failed
        ],
    }


def render_text(explanation: Explanation, plan_names: Iterable[str]) -> str:
    """Per plan, a line per change: time, cause, points moved, score after and before; the
    plan version in the plan's heading, and again on the change where it switches."""
    until = "-" if explanation.until is None else format_time(explanation.until)
    lines = [f"Contact {explanation.contact_id}: {explanation.events:,} events, up to {until}"]
    names = list(dict.fromkeys([*plan_names, *(change.plan for change in explanation.changes)]))
    for name in names:
        changes = [change for change in explanation.changes if change.plan == name]
        version = next((c.plan_version for c in changes if c.plan_version is not None), None)
        lines.append("")
        lines.append(
            f"Plan {name}: {len(changes):,} score changes"
            + ("" if version is None else f", version {version}")
        )
        rows = []
        for change in changes:
            notes = list(change.alerts)
            if change.plan_version is not None and change.plan_version != version:
                version = change.plan_version  # a switch: said where it happens, once
                notes.append(f"version {version}")
            rows.append(
                (
                    change.time,
                    format_cause(change.cause),
                    format_points(change.points),
                    f"now {change.score:,} (was {change.previous_score:,})",
                    ", ".join(notes),
                )
            )
        widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append(("  " + "  ".join([*cells, row[4]])).rstrip())
    if explanation.erased:
        lines.append("")
        lines.extend(
            f"Erased at {time}: forgotten, later events start a new history"
            for time in explanation.erased
        )
    for failed in explanation.failed:
        what = "advancing" if failed.event is None else f"event {failed.event.id!r}"
        lines.append(f"scoring error, {what}: {failed.message}")
    if explanation.rejected:
        lines.append(f"rejected lines in the file: {len(explanation.rejected):,}")
    return "\n".join(lines) + "\n"
