"""Worker source trees alternated on one preloaded topic: a change against its base, one run.

    git worktree add /tmp/base main && (cd /tmp/base && .venv/bin/python -m streams.compile)
    .venv/bin/python bench/trees.py base=/tmp/base new=. --rounds 2 --latency-seconds 20

On a shared machine only what is measured in the same minutes compares, so the trees take
turns (the order reversed each round) against the same topic and broker: bench/worker.py's
throughput of one worker (first event consumed -> every offset committed) and, with
`--latency-seconds`, its fixed-rate phase at 1,000 events/s for a `read_committed` reader
right after. Each tree runs `python -m streams.worker` from its own checkout, with this
environment's packages and the compiled core built in that checkout (else its source, with a
warning). Medians and the ratios of each tree to the first, taken within each round, go to
bench/results/trees.json; `--profile` samples one more run of the last tree with py-spy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import GroupProgress, Loaded, WorkerProcess
from bench.worker import LOGS, RESULTS, Bench, Sizes, machine
from bench.worker import parse_args as worker_args
from streams.kafka.broker import broker_from_env
from streams.worker.settings import TopicNames


class TreeBench(Bench):
    """bench/worker.py's phases, with workers from `source`."""

    source = Path.cwd()

    def worker(self, prefix: str, app_id: str, name: str) -> WorkerProcess:
        return dataclasses.replace(super().worker(prefix, app_id, name), source=self.source)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("trees", nargs="+", help="NAME=PATH of each checkout, the base first")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency-seconds", type=float, default=0.0, help="0: no latency phase")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy seconds, last tree")
    parser.add_argument("--output", type=Path, default=RESULTS / "trees.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in args.trees)}
    sizes = ["--events", str(args.events), "--contacts", str(args.contacts), "--rates", "1000"]
    latency = ["--latency-seconds", str(args.latency_seconds or 1)]
    bench_args = worker_args([*sizes, *latency, "--runs", "1", "--no-profile"])
    LOGS.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    profile = None
    with (
        tempfile.TemporaryDirectory(prefix="leadscore-trees-") as work,
        broker_from_env() as bootstrap,
    ):
        bench = TreeBench(bootstrap, Path(work), bench_args, {})
        try:
            topics, loaded = bench.load("main", args.contacts, args.events)
            for round_ in range(args.rounds):
                for name in list(trees) if round_ % 2 == 0 else list(trees)[::-1]:
                    bench.source = trees[name]
                    session = sum(map(len, runs.values())) if args.latency_seconds else None
                    result = run(bench, topics, loaded, f"{name}{round_}", session)
                    runs[name].append(result | {"round": round_})
            if args.profile:
                bench.source = trees[list(trees)[-1]]
                seconds = {"profile_seconds": args.profile}
                bench.sizes = Sizes(**(dataclasses.asdict(bench.sizes) | seconds))
                profile = bench.profile(topics, bench.prefixes[-1], RESULTS / "trees-profile.txt")
        finally:
            bench.cleanup()
    summary = summarize(runs, next(iter(trees)))
    trees_run = {name: str(path) for name, path in trees.items()}
    results = {"machine": machine(), "trees": trees_run, **summary, "profile": profile}
    args.output.write_text(json.dumps(results | {"runs": runs}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def run(
    bench: TreeBench, topics: TopicNames, loaded: Loaded, app_id: str, session: int | None
) -> dict[str, Any]:
    """One worker of `bench.source` through the topic, then (unless `session` is None) its
    latency phase, the `session`-th on this topic."""
    phases: dict[str, Any] = {}

    def measure(worker: WorkerProcess, progress: GroupProgress) -> None:
        assert session is not None
        phases.update(bench.latency(topics, loaded, worker, progress, session))

    result = bench.single(topics, bench.prefixes[-1], app_id, None if session is None else measure)
    return result | {"latency": phases}


def summarize(runs: dict[str, list[dict[str, Any]]], base: str) -> dict[str, Any]:
    """Medians per tree, and each tree's ratios to the base taken within each round."""

    def p99(run: dict[str, Any]) -> float | None:
        phases = run["latency"].get("1000")
        return float(phases[0]["p99_ms"]) if phases else None

    summary: dict[str, Any] = {}
    for name, rows in runs.items():
        pairs = list(zip(rows, runs[base], strict=True))
        latencies = [p for p in map(p99, rows) if p is not None]
        summary[name] = {
            "events_per_second": statistics.median(r["events_per_second"] for r in rows),
            "cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in rows),
            "p99_ms_at_1000": statistics.median(latencies) if latencies else None,
            "to_base_events_per_second": statistics.median(
                r["events_per_second"] / b["events_per_second"] for r, b in pairs
            ),
            "to_base_cpu_per_event": statistics.median(
                r["cpu_us_per_event"] / b["cpu_us_per_event"] for r, b in pairs
            ),
        }
    return summary


if __name__ == "__main__":
    sys.exit(main())
