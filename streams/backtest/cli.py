"""`leadscore backtest`, `leadscore simulate` and `leadscore plans check`: the batch commands."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeAlias

import orjson

from streams.backtest import outcomes_cli
from streams.backtest.diff import SAMPLE, TOP, diff_plans, diff_to_json
from streams.backtest.diff import plot_png as diff_plot_png
from streams.backtest.diff import render_text as render_diff
from streams.backtest.parallel import Backtest, backtest_file, default_jobs
from streams.backtest.replay import plans_at
from streams.backtest.report import PlanReport, build_report, plot_png, render_text, report_to_json
from streams.backtest.simulate import Simulation, write_jsonl
from streams.models.events import EventError, format_time, parse_time
from streams.models.outcomes import write_outcomes
from streams.models.outputs import THRESHOLD_CROSSED
from streams.models.plan_file import PlanError
from streams.models.plan_versions import PlanHistory, PlanVersion, load_plan_version
from streams.scoring import Outcome, Plans, PlanSet

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_cli(
    subparsers: SubParsers, plan_commands: Sequence[Callable[[SubParsers], None]] = ()
) -> None:
    """`plan_commands` add more `leadscore plans` commands: those that need Kafka (`publish`)
    live with the worker, which the backtest does not import."""
    backtest = subparsers.add_parser(
        "backtest", help="replay a file of events through plans and show the outcome"
    )
    backtest.add_argument("events", type=Path, help="JSONL(.gz), one structured CloudEvent a line")
    backtest.add_argument(
        "--plans",
        type=Path,
        action="append",
        required=True,
        help="plans YAML file; repeat for a history, each later file taking over at its "
        "effective_from",
    )
    backtest.add_argument("--until", help="RFC 3339 time to advance to (default: last event)")
    backtest.add_argument(
        "--suggest-threshold", type=float, metavar="PCT", help="score the top PCT%% reach"
    )
    backtest.add_argument("--json", action="store_true", help="machine-readable report")
    backtest.add_argument("--plot", type=Path, metavar="FILE.png", help="histogram picture")
    backtest.add_argument("--scores", type=Path, metavar="FILE.jsonl", help="final score a contact")
    backtest.add_argument("--alerts", type=Path, metavar="FILE.jsonl", help="every alert emitted")
    backtest.add_argument(
        "--jobs",
        type=_positive_int,
        default=default_jobs(),
        metavar="N",
        help="processes to spread the contacts over (default: the cores, %(default)s here)",
    )
    backtest.set_defaults(handler=run_backtest)

    simulate = subparsers.add_parser("simulate", help="write realistic sample events (JSONL)")
    simulate.add_argument("output", type=Path, help="file to write (.gz compresses)")
    simulate.add_argument("--contacts", type=int, default=1000)
    simulate.add_argument("--events", type=int, default=20000)
    simulate.add_argument("--days", type=float, default=90.0)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument(
        "--outcomes",
        type=Path,
        metavar="FILE.jsonl",
        help="also write who converted and when (for plans evaluate and plans fit)",
    )
    simulate.set_defaults(handler=run_simulate)

    plans = subparsers.add_parser("plans", help="work with plan files")
    plans_commands = plans.add_subparsers(dest="plans_command", required=True)
    check = plans_commands.add_parser("check", help="validate a plans file")
    check.add_argument("plans_file", type=Path)
    check.set_defaults(handler=run_plans_check)
    diff = plans_commands.add_parser(
        "diff", help="replay events through two plan files and compare the outcomes"
    )
    diff.add_argument("old_plans", type=Path, metavar="OLD.yaml")
    diff.add_argument("new_plans", type=Path, metavar="NEW.yaml")
    diff.add_argument(
        "events", type=Path, metavar="EVENTS", help="JSONL(.gz), one structured CloudEvent a line"
    )
    diff.add_argument("--until", type=until_argument, help="RFC 3339 time to advance to")
    diff.add_argument("--json", action="store_true", help="machine-readable comparison")
    diff.add_argument("--plot", type=Path, metavar="FILE.png", help="both histograms")
    for option, default, text in (
        ("--sample", SAMPLE, "ids shown per list (%(default)s)"),
        ("--top", TOP, "largest changes shown (%(default)s)"),
        ("--jobs", default_jobs(), "processes for each backtest (%(default)s)"),
    ):
        diff.add_argument(option, type=_positive_int, default=default, metavar="N", help=text)
    diff.set_defaults(handler=run_plans_diff)
    for add_command in plan_commands:
        add_command(plans_commands)
    outcomes_cli.add_parsers(plans_commands, _positive_int)


def run_plans_check(args: argparse.Namespace) -> int:
    version = load_plan_version(args.plans_file)
    since = version.effective_from
    print(
        f"version {version.label}, change {version.change.value}, effective_from "
        + ("when installed" if since is None else format_time(since))
    )
    for plan in version.plans.plans:
        rules = len(plan.rules) + len(plan.attributes) + len(plan.inactivity)
        state = "active" if plan.active else "inactive"
        print(f"{plan.name}: {state}, {rules} rules, {len(plan.thresholds)} thresholds")
    print(f"{args.plans_file}: OK")
    return 0


def run_plans_diff(args: argparse.Namespace) -> int:
    """Two backtests of the same file, one bar over both, then the comparison."""
    sides, summaries = [], []
    progress = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    for half, plans_file in enumerate((args.old_plans, args.new_plans)):
        version = load_plan_version(plans_file)
        plans = version.plans
        started = time.perf_counter()
        result = backtest_file(
            args.events,
            plans,
            args.until,
            None if progress is None else partial(_half, progress, half),
            jobs=args.jobs,
        )
        summaries.append(_summary(result, time.perf_counter() - started, [(plans_file, version)]))
        sides.append((result, plans, plan_reports(result, plans, None)))
    if progress is not None:
        progress.finish()
    diffs = diff_plans(sides[0], sides[1], sample=args.sample, top=args.top)
    if args.plot is not None:
        diff_plot_png(diffs, args.plot)
    if args.json:
        replays = {"before": summaries[0], "after": summaries[1]}
        document = {"replay": replays, **diff_to_json(diffs)}
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for side, path, summary, (result, _, _) in zip(
            ("before", "after"), (args.old_plans, args.new_plans), summaries, sides, strict=True
        ):
            print(f"{side}: {path}\n{_summary_text(summary, result)}")
        print(render_diff(diffs, "before", "after"))
    return 0


def _half(progress: _ProgressBar, half: int, done: int, total: int) -> None:
    progress(half * total + done, 2 * total)


def run_simulate(args: argparse.Namespace) -> int:
    simulation = Simulation(args.contacts, args.events, seed=args.seed, days=args.days)
    count = write_jsonl(simulation.events(), args.output)
    print(f"wrote {count} events for {args.contacts} contacts to {args.output}")
    if args.outcomes is not None:
        converted = write_outcomes(simulation.conversions(), args.outcomes)
        print(f"wrote {converted} conversions to {args.outcomes}")
    return 0


def run_backtest(args: argparse.Namespace) -> int:
    versions = [load_plan_version(path) for path in args.plans]
    plans = plan_history(args.plans, versions)
    until = None
    if args.until is not None:
        try:
            until = parse_time(args.until, "--until")
        except EventError as error:
            raise SystemExit(f"leadscore backtest: {error}") from None
    started = time.perf_counter()
    progress = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    result = backtest_file(args.events, plans, until, progress, jobs=args.jobs)
    if progress is not None:
        progress.finish()
    elapsed = time.perf_counter() - started
    final = plans_at(plans, result.until)
    reports = plan_reports(result, final, args.suggest_threshold)
    if args.scores is not None:
        _write_lines(args.scores, (orjson.dumps(row) for row in final_scores(result, final)))
    if args.alerts is not None:
        _write_lines(args.alerts, (alert.to_bytes() for alert in result.alerts))
    if args.plot is not None:
        plot_png(reports, args.plot)
    summary = _summary(result, elapsed, list(zip(args.plans, versions, strict=True)))
    if args.json:
        document = {"replay": summary, **report_to_json(reports)}
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(_summary_text(summary, result))
        print(render_text(reports))
    return 0


def plan_history(paths: list[Path], versions: list[PlanVersion]) -> Plans:
    """One file's plans, or the history of several: each file after the first takes over at
    its `effective_from`, which it must name, in the order given."""
    if len(versions) == 1:
        return versions[0].plans
    for path, version in zip(paths[1:], versions[1:], strict=True):
        if version.effective_from is None:
            raise PlanError(
                f"{path}: effective_from: required for a --plans file after the first "
                "(when it takes over), e.g. effective_from: 2026-12-01T09:00:00Z"
            )
    for (path, version), (later_path, later) in itertools.pairwise(
        zip(paths[1:], versions[1:], strict=True)
    ):
        assert version.effective_from is not None and later.effective_from is not None
        if later.effective_from < version.effective_from:
            raise PlanError(
                f"{later_path}: effective_from: {format_time(later.effective_from)} is before "
                f"{path}'s {format_time(version.effective_from)}; give the --plans files in "
                "the order they take over"
            )
    return PlanHistory(tuple(versions))


def final_scores(result: Backtest, plans: PlanSet) -> list[dict[str, Any]]:
    """One row a contact (erased contacts have none), sorted by contact id."""
    names = [plan.name for plan in plans]
    return [
        {"contact_id": contact_id, "scores": dict(zip(names, scores, strict=True))}
        for contact_id, scores in result.scores
    ]


def plan_reports(
    result: Backtest, plans: PlanSet, suggest_top_pct: float | None
) -> list[PlanReport]:
    crossed: defaultdict[str, Counter[str]] = defaultdict(Counter)  # with earlier versions' plans
    dropped: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for alert in result.alerts:
        counts = crossed if alert.type == THRESHOLD_CROSSED else dropped
        counts[alert.data["plan"]][alert.data["threshold"]] += 1
    return [
        build_report(
            plan.name,
            [scores[index] for _, scores in result.scores],
            [(threshold.name, threshold.score) for threshold in plan.thresholds],
            crossed[plan.name],
            dropped[plan.name],
            suggest_top_pct=suggest_top_pct,
        )
        for index, plan in enumerate(plans)
    ]


def _summary(
    result: Backtest, elapsed: float, versions: list[tuple[Path, PlanVersion]]
) -> dict[str, Any]:
    events = sum(result.outcomes.values())
    return {
        "events": events,
        "applied": result.outcomes[Outcome.APPLIED],
        "duplicates": result.outcomes[Outcome.DUPLICATE],
        "ignored_after_erasure": result.outcomes[Outcome.IGNORED],
        "rejected_lines": len(result.rejected),
        "scoring_errors": len(result.failed),
        "contacts": len(result.scores),
        "alerts": len(result.alerts),
        "score_updates": result.score_updates,
        "until": None if result.until is None else format_time(result.until),
        "seconds": round(elapsed, 3),
        "events_per_second": round(events / elapsed) if elapsed > 0 else None,
        "plan_versions": [
            {
                "file": str(path),
                "version": version.label,
                "change": version.change.value,
                "effective_from": (
                    None  # the first is in force from the beginning
                    if index == 0 or version.effective_from is None
                    else format_time(version.effective_from)
                ),
            }
            for index, (path, version) in enumerate(versions)
        ],
    }


def _summary_text(summary: dict[str, Any], result: Backtest) -> str:
    lines = [
        f"replayed {summary['events']:,} events for {summary['contacts']:,} contacts "
        f"up to {summary['until']} in {summary['seconds']:.1f} s "
        f"({summary['events_per_second'] or 0:,} events/s)",
        f"  applied {summary['applied']:,}, duplicates {summary['duplicates']:,}, "
        f"ignored after erasure {summary['ignored_after_erasure']:,}, "
        f"rejected lines {summary['rejected_lines']:,}",
        f"  alerts {summary['alerts']:,}, score updates {summary['score_updates']:,}",
    ]
    lines += [
        f"  plans {row['file']}: version {row['version']} ({row['change']}"
        + ("" if row["effective_from"] is None else f" from {row['effective_from']}")
        + ")"
        for row in summary["plan_versions"]
    ]
    lines += [f"  line {r.line}: {r.message}" for r in result.rejected[:5]]
    if len(result.rejected) > 5:
        lines.append(f"  ... and {len(result.rejected) - 5} more rejected lines")
    if result.failed:
        lines.append(f"  scoring errors {len(result.failed):,} (the worker dead-letters them)")
    for failed in result.failed[:5]:
        what = "advancing" if failed.event is None else f"event {failed.event.id!r} of"
        lines.append(f"  {what} contact {failed.contact_id!r}: {failed.message}")
    if len(result.failed) > 5:
        lines.append(f"  ... and {len(result.failed) - 5} more scoring errors")
    return "\n".join(lines) + "\n"


def until_argument(text: str) -> float:
    """`--until`: an RFC 3339 time, or a usage error saying what is wrong with it."""
    try:
        return parse_time(text, "--until")
    except EventError as error:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(error).removeprefix("--until: ")) from None


def _positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def _write_lines(path: Path, lines: Any) -> None:
    with path.open("wb") as out:
        for line in lines:
            out.write(line + b"\n")


class _ProgressBar:
    """A one-line progress bar on a terminal; nothing when output is redirected."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        fraction = done / total if total else 1.0
        filled = int(fraction * 30)
        self._stream.write(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%}")
        self._stream.flush()

    def finish(self) -> None:
        self._stream.write("\r" + " " * 48 + "\r")
        self._stream.flush()
