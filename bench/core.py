"""Benchmark of the scoring core alone: `backtest` over generated events, no Kafka.

    .venv/bin/python bench/core.py [--events 1000000] [--contacts 100000] [--runs 3]
                                   [--compare | --orders]

Each run is a fresh process (so peak RSS is per run) that imports the code of the checkout
this file is in, whatever the venv's editable install points at; the median events/s is
reported, with every run, in bench/results/core.json (core-compare.json with `--compare`).
Each run says which build it ran (`compiled`: how many of the compiled core's modules came
from the mypyc build, 0 for the pure-Python source). `--compare` alternates runs of the
pure-Python source (LEADSCORE_PURE_PYTHON=1) and of the compiled build, `--runs` of each, and
reports both medians and their ratios: on a shared machine single runs move, alternate ones
move together. Events per CPU second (the process's own CPU time) move less than events per
second of the wall clock when other processes take the cores. `--orders` replays the file as
generated (in time order), with 0.1% of its lines moved to the end (each earlier than the lines
before it, as an export appended to a log) and shuffled, runs alternating, and reports each
order's medians and their ratios to the sorted file's (core-orders.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from streams.backtest.replay import replay_file
from streams.backtest.simulate import generate, write_jsonl
from streams.scoring import load_plans

HERE = Path(__file__).resolve().parent
PLANS = HERE.parent / "schemas" / "examples" / "plans.yaml"


PURE_ENV = "LEADSCORE_PURE_PYTHON"
ORDERS = ("sorted", "late", "shuffled")
LATE_SHARE = 0.001
"""The share of lines moved to the end for the `late` order."""


def one_run(events_file: Path) -> dict[str, float]:
    """Replay once in this process; print what a parent run collects."""
    from streams import compiled  # noqa: PLC0415  (the checkout's, as in every child)

    plans = load_plans(PLANS)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = replay_file(events_file, plans)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    events = sum(result.outcomes.values())
    return {
        "events": events,
        "contacts": len(result.states),
        "alerts": len(result.alerts),
        "seconds": seconds,
        "events_per_second": events / seconds,
        "cpu_seconds": cpu_seconds,
        "events_per_cpu_second": events / cpu_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "compiled": len(compiled.loaded()),
        "compilable": len(compiled.MODULES),
    }


def child_run(data: Path, *, pure: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    env.pop(PURE_ENV, None)
    if pure:
        env[PURE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(data)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    run: dict[str, float] = json.loads(done.stdout)
    return run


def arranged(data: Path, order: str) -> Path:
    """The generated file (in time order) in one of the `ORDERS`: made once beside it, the same
    bytes every time."""
    if order == "sorted":
        return data
    path = data.with_name(f"{data.stem}-{order}{data.suffix}")
    if not path.exists():
        lines = data.read_bytes().splitlines(keepends=True)
        rng = random.Random(1)
        if order == "late":
            late = set(rng.sample(range(len(lines)), round(len(lines) * LATE_SHARE)))
            kept = [line for index, line in enumerate(lines) if index not in late]
            lines = kept + [lines[index] for index in sorted(late)]
        else:
            rng.shuffle(lines)
        path.write_bytes(b"".join(lines))
    return path


def medians(runs: list[dict[str, float]]) -> dict[str, int]:
    return {
        "median_events_per_second": round(statistics.median(r["events_per_second"] for r in runs)),
        "median_events_per_cpu_second": round(
            statistics.median(r["events_per_cpu_second"] for r in runs)
        ),
        "median_peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in runs)),
    }


def ratios(
    runs: list[dict[str, float]], base: list[dict[str, float]], digits: int
) -> dict[str, float]:
    """The medians of `runs` over those of `base`, of events per second and per CPU second."""
    return {
        key: round(
            statistics.median(r[key] for r in runs) / statistics.median(r[key] for r in base),
            digits,
        )
        for key in ("events_per_second", "events_per_cpu_second")
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--compare", action="store_true", help="alternate pure-Python and compiled runs"
    )
    modes.add_argument(
        "--orders",
        action="store_true",
        help="alternate the file in time order, with its last 0.1%% late, and shuffled",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_run(args.child)))
        return 0
    data = HERE / ".data" / f"events-{args.events}-{args.contacts}.jsonl"
    if not data.exists():
        data.parent.mkdir(exist_ok=True)
        write_jsonl(generate(args.contacts, args.events), data)
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    summary: dict[str, object] = {
        "machine": machine,
        "events": args.events,
        "contacts": args.contacts,
    }
    if args.compare:
        pure: list[dict[str, float]] = []
        fast: list[dict[str, float]] = []
        for _ in range(args.runs):
            pure.append(child_run(data, pure=True))
            fast.append(child_run(data, pure=False))
        if any(run["compiled"] != run["compilable"] for run in fast):
            parser.error("the compiled build is not in use: run python -m streams.compile")
        summary["pure"] = medians(pure)
        summary["compiled"] = medians(fast)
        summary.update({f"ratio_{key}": value for key, value in ratios(fast, pure, 2).items()})
        summary["runs"] = {"pure": pure, "compiled": fast}
        name = "core-compare.json"
    elif args.orders:
        files = {order: arranged(data, order) for order in ORDERS}
        by_order: dict[str, list[dict[str, float]]] = {order: [] for order in ORDERS}
        for _ in range(args.runs):
            for order in ORDERS:
                by_order[order].append(child_run(files[order], pure=False))
        for order, runs in by_order.items():
            to_sorted = ratios(runs, by_order["sorted"], 3)
            summary[order] = {
                **medians(runs),
                **{f"ratio_{key}_to_sorted": value for key, value in to_sorted.items()},
            }
        summary["runs"] = by_order
        name = "core-orders.json"
    else:
        runs = [child_run(data, pure=False) for _ in range(args.runs)]
        summary.update(medians(runs))
        summary["runs"] = runs
        name = "core.json"
    out = HERE / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
