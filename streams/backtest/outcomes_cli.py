"""`leadscore plans evaluate` and `leadscore plans fit`: plans judged and learned from outcomes.

Registered under `leadscore plans` by `streams.backtest.cli`. `fit` imports `streams.learn`
(scikit-learn and numpy, the `learn` extra) only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streams.backtest.evaluate import evaluate_files, parse_capacity, parse_precision
from streams.backtest.evaluate_report import plot_png, render_text, to_json
from streams.backtest.parallel import default_jobs
from streams.models.durations import parse_duration
from streams.models.events import EventError
from streams.models.outcomes import Outcomes, OutcomesError, load_outcomes
from streams.models.plan_versions import load_plan_version
from streams.models.plans import PlanSet
from streams.models.times import parse_time


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    positive_int: Callable[[str], int],
) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="how well each plan's score predicted conversion (needs outcomes)"
    )
    evaluate.add_argument(
        "--plans",
        type=Path,
        action="append",
        required=True,
        metavar="PLANS.yaml",
        help="plans file; repeat to compare files on the same contacts",
    )
    _common(evaluate, positive_int)
    evaluate.add_argument("--plot", type=Path, metavar="FILE.png", help="lift and bands picture")
    evaluate.set_defaults(handler=run_evaluate)

    fit = commands.add_parser("fit", help="learn a plan's points from outcomes (leadscore[learn])")
    fit.add_argument("--out", type=Path, required=True, metavar="SUGGESTED.yaml")
    fit.add_argument(
        "--plans",
        type=Path,
        action="append",
        default=[],
        metavar="PLANS.yaml",
        help="current plans, evaluated next to the fitted plan on the same test contacts",
    )
    _common(fit, positive_int)
    fit.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="'TYPE FIELD OP VALUE'",
        help="an extra count to learn from, e.g. 'page.visited url glob */pricing*'",
    )
    fit.add_argument(
        "--name",
        default="fitted",
        help="of the fitted plan; a current plan's name makes plans diff compare the two",
    )
    fit.add_argument("--seed", type=int, default=7, help="of the train/test split (%(default)s)")
    fit.add_argument(
        "--max-points", type=positive_int, default=100, help="of the strongest factor per unit"
    )
    fit.add_argument(
        "--min-conversions",
        type=positive_int,
        default=100,
        help="refuse to fit with fewer conversions, or fewer others (%(default)s)",
    )
    fit.add_argument(
        "--max-values",
        type=positive_int,
        default=20,
        help="distinct values a field may have to give features (%(default)s)",
    )
    fit.set_defaults(handler=run_fit)


def _common(parser: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    parser.add_argument("events", type=Path, metavar="EVENTS", help="JSONL(.gz) of CloudEvents")
    parser.add_argument(
        "--outcomes",
        type=Path,
        required=True,
        metavar="FILE",
        help="conversions: JSONL or CSV with contact_id, converted_at, value (optional)",
    )
    parser.add_argument(
        "--horizon",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="read a converter's score this long before its conversion, e.g. 30d",
    )
    parser.add_argument(
        "--as-of", type=_time, metavar="TIME", help="read the others' scores then (default: end)"
    )
    parser.add_argument(
        "--capacity",
        type=parse_capacity,
        metavar="N/PERIOD",
        help="alerts sales can take, e.g. 50/week: the threshold that sends no more",
    )
    parser.add_argument(
        "--precision", type=parse_precision, metavar="P", help="target precision, e.g. 30%%"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=default_jobs(),
        metavar="N",
        help="processes for each replay (default: the cores, %(default)s here)",
    )


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _time(text: str) -> float:
    try:
        return parse_time(text, "--as-of")
    except EventError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--as-of: ")) from None


def _outcomes(path: Path, command: str) -> Outcomes:
    try:
        return load_outcomes(path)
    except OutcomesError as error:
        raise SystemExit(f"leadscore plans {command}: {error}") from None


def _plan_files(paths: list[Path]) -> list[tuple[str, PlanSet]]:
    return [(str(path), load_plan_version(path).plans) for path in paths]


def run_evaluate(args: argparse.Namespace) -> int:
    evaluation = evaluate_files(
        args.events,
        _plan_files(args.plans),
        _outcomes(args.outcomes, "evaluate"),
        horizon=args.horizon,
        as_of=args.as_of,
        capacity=args.capacity,
        precision=args.precision,
        jobs=args.jobs,
    )
    if args.plot is not None:
        plot_png(evaluation, args.plot)
    if args.json:
        _print_json(to_json(evaluation))
    else:
        sys.stdout.write(render_text(evaluation))
    return 0


def run_fit(args: argparse.Namespace) -> int:
    try:
        from streams.learn import fit  # noqa: PLC0415  (scikit-learn: only for this command)
        from streams.learn.features import parse_feature  # noqa: PLC0415
    except ImportError as error:
        raise SystemExit(
            f"leadscore plans fit needs scikit-learn and numpy ({error.name} is missing): "
            "pip install 'leadscore[learn]'"
        ) from None
    outcomes = _outcomes(args.outcomes, "fit")
    try:
        result = fit.fit_plan(
            args.events,
            outcomes,
            _plan_files(args.plans),
            given=[parse_feature(text) for text in args.feature],
            horizon=args.horizon,
            as_of=args.as_of,
            seed=args.seed,
            max_points=args.max_points,
            min_conversions=args.min_conversions,
            max_values=args.max_values,
            capacity=args.capacity,
            precision=args.precision,
            jobs=args.jobs,
            label=str(args.out),
            name=args.name,
        )
    except fit.NotEnoughDataError as error:
        print(f"leadscore plans fit: not enough data to fit: {error}", file=sys.stderr)
        return 2
    args.out.write_text(result.text, encoding="utf-8")
    if args.json:
        _print_json(fit.to_json(result, args.out))
    else:
        sys.stdout.write(fit.render_text(result, args.out))
    return 0


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
