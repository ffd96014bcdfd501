"""Benchmark of a partition rebuild for `change: rescore`: time per million events.

    .venv/bin/python -m bench.rebuild [--events 1000000] [--contacts 100000] [--runs 3]

Uses the embedded broker (or `$LEADSCORE_KAFKA_BOOTSTRAP`), loads simulated events once into
a one-partition input topic (binary CloudEvents, murmur2, as `EventPublisher` sends them) with
an empty rerouted topic, then rebuilds the partition with the example plans, `--runs` times in one
process (`rebuild_partition`: read with librdkafka from the beginning, decode, replay through
the core, keep the records with their origins). The swap is timed too,
into contact states holding no old records (RocksDB in a temporary directory): it rescores
every contact once. The median run goes to bench/results/rebuild.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import faust
from prometheus_client import CollectorRegistry

from bench.harness import load_events
from streams.backtest.simulate import generate
from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.broker import broker_from_env
from streams.kafka.security import KafkaConnection
from streams.models.plan_versions import PlanHistory, parse_plan_version
from streams.scoring import Output
from streams.worker.flow.outbox import Outbox
from streams.worker.plans.live import LivePlans
from streams.worker.rescore.rebuild import HistorySource, rebuild_partition
from streams.worker.runtime.fencing import Transactions
from streams.worker.settings import TopicNames
from streams.worker.state.states import ContactStates
from streams.worker.state.store import ContactTable
from streams.worker.web.metrics import Metrics

HERE = Path(__file__).resolve().parent
PLANS = HERE.parent / "schemas" / "examples" / "plans.yaml"


class _CountingOutbox:
    """Takes the swap's outputs; the benchmark only counts them."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        self.sent += len(outputs)


async def _rebuild_and_swap(bootstrap: str, prefix: str, end: int) -> dict[str, float]:
    topics = TopicNames.with_prefix(prefix)
    source = HistorySource(KafkaConnection(bootstrap), topics.events, topics.rerouted, 1, "bench")
    version = parse_plan_version(PLANS.read_text(), str(PLANS))
    metrics = Metrics()
    started, cpu = time.perf_counter(), time.process_time()
    rebuilt = await rebuild_partition(
        source, 0, {topics.events: end, topics.rerouted: 0}, version, metrics
    )
    replayed, cpu = time.perf_counter() - started, time.process_time() - cpu
    contacts = len(rebuilt.states)
    with tempfile.TemporaryDirectory() as data_dir:
        app = faust.App("bench-rebuild", store="rocksdb://", datadir=data_dir)
        table = ContactTable(app, name="contacts", partitions=1, key_type=bytes, value_type=bytes)

        async def no_barrier() -> None:
            """Nothing persists here."""

        states = ContactStates(
            lambda: table.store,
            cast(Transactions, None),
            "changelog",
            LivePlans(PlanHistory.single(version.plans), CollectorRegistry(), time.time),
            no_barrier,
        )
        outbox = _CountingOutbox()
        started = time.perf_counter()
        await rebuilt.swap(states, cast(Outbox, outbox), version.plans, time.time())
        swapped = time.perf_counter() - started
        table.store.close()
    return {
        "events": end,
        "contacts": contacts,
        "replay_seconds": replayed,
        "swap_seconds": swapped,
        "swap_outputs": outbox.sent,
        "seconds_per_million_events": replayed / end * 1_000_000,
        "cpu_seconds_per_million_events": cpu / end * 1_000_000,
        "events_per_second": end / replayed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("--events", 1_000_000), ("--contacts", 100_000), ("--runs", 3)):
        parser.add_argument(flag, type=int, default=default)
    args = parser.parse_args()
    with broker_from_env() as bootstrap:
        prefix = f"bench-rebuild-{uuid.uuid4().hex[:8]}."
        topics = TopicNames.with_prefix(prefix)
        ensure_topics(bootstrap, [TopicSpec(topics.events, 1), TopicSpec(topics.rerouted, 1)])
        loaded = load_events(bootstrap, topics.events, generate(args.contacts, args.events))
        # One process: each run's states are released before the next starts.
        runs = [
            asyncio.run(_rebuild_and_swap(bootstrap, prefix, loaded.events))
            for _ in range(args.runs)
        ]

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other work, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "events": loaded.events,
        "contacts": args.contacts,
        "median_seconds_per_million_events": round(median("seconds_per_million_events"), 1),
        "median_events_per_second": round(median("events_per_second")),
        "median_cpu_seconds_per_million_events": round(median("cpu_seconds_per_million_events"), 1),
        "median_swap_seconds": round(median("swap_seconds"), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "runs": runs,
    }
    (HERE / "results" / "rebuild.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({key: value for key, value in summary.items() if key != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
