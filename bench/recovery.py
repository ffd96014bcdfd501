"""Recovery of a large contact table from its changelog, alone: spawn -> /readyz 200, with RSS.

    .venv/bin/python bench/recovery.py [--contacts 1000000] [--events 2000000] [--rounds 1]
    .venv/bin/python bench/recovery.py --keep           # leave the topics for --reuse
    .venv/bin/python bench/recovery.py --reuse PREFIX   # recover again from a kept changelog

The large-topic part of bench/worker.py (`./dev bench`'s "recovery of 1,000,000 contacts")
without the rest, which takes half an hour more: simulated events (the same seed) scored by
one worker, then `--rounds` fresh workers of its group, each with an empty data dir, recover
its changelog (`--profile`: py-spy on the first, from its web server's first answer until it
is ready). Scoring the topic takes most of the time, so `--keep` leaves the topics and
changelog on the broker, and `--reuse` measures recovery again from them, for a before/after
of a change to recovery; both need a broker that outlives the script (`leadscore dev-broker`
and `LEADSCORE_KAFKA_BOOTSTRAP`).

Prints JSON and writes it to bench/results/recovery.json (the raw profile beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import create_input_topics, load_events
from bench.worker import LOGS, RESULTS, SEED, Bench, parse_args
from streams.backtest.simulate import generate
from streams.kafka.broker import broker_from_env
from streams.worker.settings import TopicNames

APP_ID = "large"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="recoveries; medians are reported")
    parser.add_argument("--profile", action="store_true", help="py-spy on the first recovery")
    parser.add_argument("--keep", action="store_true", help="do not delete the topics")
    parser.add_argument("--reuse", metavar="PREFIX", help="topics kept by an earlier --keep")
    args = parser.parse_args(argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": os.getloadavg(),
    }
    worker_args = parse_args(["--runs", "1", "--partitions", str(args.partitions)])
    with (
        tempfile.TemporaryDirectory(prefix="leadscore-recovery-") as work,
        broker_from_env() as bootstrap,
    ):
        bench = Bench(bootstrap, Path(work), worker_args, {})
        prefix = args.reuse or f"benchrecovery{uuid.uuid4().hex[:6]}."
        try:
            if args.reuse is None:
                topics = create_input_topics(bootstrap, prefix, args.partitions)
                loaded = load_events(
                    bootstrap, topics.events, generate(args.contacts, args.events, seed=SEED)
                )
                bench.log(f"loaded {loaded.events:,} events into {prefix}")
                result["scored"] = bench.single(TopicNames.with_prefix(prefix), prefix, APP_ID)
            profile = RESULTS / "recovery-profile.txt" if args.profile else None
            recoveries = [
                bench.recovery(prefix, APP_ID, f"recovery{n}", profile if n == 0 else None)
                for n in range(args.rounds)
            ]
        finally:
            if not (args.keep or args.reuse):
                bench.prefixes.append(prefix)
                bench.cleanup()
    result |= {
        "prefix": prefix,
        "load_average_after": os.getloadavg(),
        "median_seconds": statistics.median(r["seconds"] for r in recoveries),
        "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in recoveries),
        "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in recoveries),
        "recoveries": recoveries,
    }
    (RESULTS / "recovery.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
