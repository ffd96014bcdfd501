"""Benchmark of `backtest --jobs N` against `--jobs 1`, alternating, in one run.

    .venv/bin/python bench/jobs.py [--events 200000] [--contacts 20000] [--jobs 2] [--runs 5]
                                   [--gzip]

On a machine shared with other work, absolute speeds drift from minute to minute; runs of
both kinds taken in turns drift together, so the median of the pairs' ratios is the figure to
trust. The CPU seconds (all processes) show the cost of spreading the work, whatever the load.
Results, with every run, go to bench/results/jobs.json.
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
from pathlib import Path
from typing import Any

from streams.backtest.simulate import generate, write_jsonl

HERE = Path(__file__).resolve().parent
PLANS = HERE.parent / "schemas" / "examples" / "plans.yaml"
RESULTS = HERE / "results"


def one_run(events_file: Path, jobs: int) -> dict[str, float]:
    """One `leadscore backtest` process: its replay seconds and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-m", "streams", "backtest", str(events_file), "--json"]
    report = subprocess.run(
        [*command, "--plans", str(PLANS), "--jobs", str(jobs)],
        check=True,
        capture_output=True,
        cwd=HERE.parent,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"jobs": jobs, "seconds": json.loads(report)["replay"]["seconds"], "cpu_seconds": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gzip", action="store_true", help="a compressed events file")
    args = parser.parse_args()
    suffix = ".jsonl.gz" if args.gzip else ".jsonl"
    data = HERE / ".data" / f"events-{args.events}-{args.contacts}{suffix}"
    if not data.exists():
        data.parent.mkdir(exist_ok=True)
        write_jsonl(generate(args.contacts, args.events), data)
    pairs = [(one_run(data, 1), one_run(data, args.jobs)) for _ in range(args.runs)]

    def medians(key: str) -> dict[str, float]:
        return {
            str(pair_jobs): round(statistics.median(pair[index][key] for pair in pairs), 3)
            for index, pair_jobs in enumerate((1, args.jobs))
        }

    ratios = [one["seconds"] / many["seconds"] for one, many in pairs]

    summary: dict[str, Any] = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "events": args.events,
        "contacts": args.contacts,
        "gzip": args.gzip,
        "jobs": args.jobs,
        "median_speedup": round(statistics.median(ratios), 2),
        "median_seconds": medians("seconds"),
        "median_cpu_seconds": medians("cpu_seconds"),
        "runs": pairs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "jobs.json").write_text(json.dumps(summary, indent=2) + "\n")
    seconds, cpu = summary["median_seconds"], summary["median_cpu_seconds"]
    print(
        f"--jobs {args.jobs} is {summary['median_speedup']}x as fast as --jobs 1 (median of "
        f"{args.runs} alternated pairs); median seconds {seconds}, CPU seconds {cpu}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
