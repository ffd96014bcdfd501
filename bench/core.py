"""Benchmark of the scoring core alone: `backtest` over generated events, no Kafka.

    .venv/bin/python bench/core.py [--events 1000000] [--contacts 100000] [--runs 3]

Each run is a fresh process (so peak RSS is per run) that imports the code of the checkout
this file is in, whatever the venv's editable install points at; the median events/s is
reported, with every run, in bench/results/core.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def one_run(events_file: Path) -> dict[str, float]:
    """Replay once in this process; print what a parent run collects."""
    plans = load_plans(PLANS)
    started = time.perf_counter()
    result = replay_file(events_file, plans)
    seconds = time.perf_counter() - started
    events = sum(result.outcomes.values())
    return {
        "events": events,
        "contacts": len(result.states),
        "alerts": len(result.alerts),
        "seconds": seconds,
        "events_per_second": events / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_run(args.child)))
        return 0
    data = HERE / ".data" / f"events-{args.events}-{args.contacts}.jsonl"
    if not data.exists():
        data.parent.mkdir(exist_ok=True)
        write_jsonl(generate(args.contacts, args.events), data)
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, __file__, "--child", str(data)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(HERE.parent)},
            ).stdout
        )
        for _ in range(args.runs)
    ]
    summary = {
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "events": args.events,
        "contacts": args.contacts,
        "median_events_per_second": round(statistics.median(r["events_per_second"] for r in runs)),
        "median_peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in runs)),
        "runs": runs,
    }
    out = HERE / "results" / "core.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
