"""What the score history (`streams.worker.state.history`) costs: bytes per contact, time per event.

    .venv/bin/python -m bench.history_cost [--contacts 10000] [--events 100000] [--rounds 3]
                                           [--worker]

Bytes: the stored record (what each persist writes to the changelog and RocksDB) of every
contact of a simulated population, with and without its history, and of one contact whose
history is full in both example plans (ids as long as a UUID).

Time: the worker's own `Processor` and `ContactStates` over the same events, in process: the
core, the outbox's encoding of every output (the send itself is a stub), the write-back
cache, and a persist every `--persist-every` events into a real RocksDB store (the changelog
send is a stub that counts bytes). Times are the event loop thread's CPU seconds (what a
worker's one busy thread pays; other processes on a shared machine inflate them less than
wall time), and runs with `--history-size` 0 and 20 alternate, so that drift falls on both.

`--worker` adds whole worker processes on a real broker (the same sizes, alternating), where
RocksDB's threads, librdkafka and the broker handle the larger records too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

from faust.types import ProducerT
from faust.types.tuples import Message
from prometheus_client import CollectorRegistry

from bench.harness import (
    PLANS,
    GroupProgress,
    WorkerProcess,
    contact_table,
    cpu_seconds,
    create_input_topics,
    delete_topics,
    load_events,
    metric_sum,
    running,
    wait_for,
)
from streams.backtest.simulate import generate
from streams.kafka.broker import broker_from_env
from streams.kafka.client import Headers, binary_message
from streams.kafka.partitioning import partition_for
from streams.models.events import TrackingEvent
from streams.models.outputs import Output
from streams.models.plan_versions import PlanHistory
from streams.scoring import PlanSet, encode_state, load_plans, score_event
from streams.scoring import engine as core_engine
from streams.worker.flow.outbox import Outbox
from streams.worker.flow.processor import Processor
from streams.worker.flow.reroute import Rerouter
from streams.worker.flow.timers import Timers
from streams.worker.plans.live import LivePlans
from streams.worker.runtime.fencing import Transactions
from streams.worker.settings import TopicNames
from streams.worker.state.history import DEFAULT_SIZE, EMPTY, Ledger
from streams.worker.state.states import ContactStates
from streams.worker.state.store import pack_record
from streams.worker.web.metrics import Metrics

PARTITIONS = 6
CONSUMED = "leadscore_events_consumed_total"
TOPICS = TopicNames.with_prefix("bench.")


class _Changelog:
    """Stands in for the worker's transactions at persist: counts what would be sent."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.acknowledged: dict[tuple[str, int], int] = {}

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int
    ) -> None:
        self.messages += 1
        self.bytes += len(key or b"") + len(value or b"")
        where = (topic, partition)
        self.acknowledged[where] = self.acknowledged.get(where, -1) + 1

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Nothing to commit: nothing was sent."""


class _Outbox:
    """Encodes every output as the real outbox does before it queues it; sends nothing."""

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        for output in outputs:
            output.to_bytes()

    async def barrier(self) -> None:
        """Everything 'sent' is acknowledged at once."""


def _messages(events: Sequence[TrackingEvent]) -> list[Message]:
    """The events as the consumer hands them over, each on its key's partition."""
    offsets = [0] * PARTITIONS
    messages = []
    for event in events:
        key, value, headers = binary_message(event)
        partition = partition_for(key or b"", PARTITIONS)
        messages.append(
            Message(TOPICS.events, partition, offsets[partition], 0.0, 0, headers, key, value, None)
        )
        offsets[partition] += 1
    return messages


def _one_run(
    messages: Sequence[Message], plans: PlanSet, history_size: int, persist_every: int
) -> dict[str, float]:
    """Handle every message, persisting every `persist_every`; seconds in each part."""
    with tempfile.TemporaryDirectory(prefix="leadscore-bench-history-") as tmp:
        table = contact_table(tmp, "bench-history", PARTITIONS)
        changelog, outbox = _Changelog(), _Outbox()
        live = LivePlans(PlanHistory.single(plans), CollectorRegistry(), time.time)
        states = ContactStates(
            lambda: table.store,
            cast(Transactions, changelog),
            "bench-changelog",
            live,
            outbox.barrier,
        )
        metrics = Metrics()
        timers = Timers("event", states, lambda: table.store, lambda: cast(ProducerT, None), "t")
        rerouter = Rerouter(TOPICS.events, PARTITIONS, cast(Outbox, outbox), metrics)
        processor = Processor(
            live,
            TOPICS,
            states,
            cast(Outbox, outbox),
            timers,
            metrics,
            rerouter,
            history_size=history_size,
        )

        async def run() -> dict[str, float]:
            handling = persisting = 0.0
            for start in range(0, len(messages), persist_every):
                began = time.thread_time()
                for message in messages[start : start + persist_every]:
                    await processor.handle(message)
                handled = time.thread_time()
                await states.persist()
                handling += handled - began
                persisting += time.thread_time() - handled
            metrics.flush()  # the worker does after each commit
            return {
                "handle_seconds": handling,
                "persist_seconds": persisting,
                "changelog_messages": changelog.messages,
                "changelog_bytes": changelog.bytes,
                "score_updates": sum(
                    metrics.registry.get_sample_value(
                        "leadscore_score_updates_sent_total", {"plan": plan.name}
                    )
                    or 0.0
                    for plan in plans
                ),
            }

        try:
            return asyncio.run(run())
        finally:
            table.store.close()


def measure_time(
    plans: PlanSet,
    contacts: int,
    events: int,
    rounds: int = 3,
    persist_every: int = 500,
    sizes: Sequence[int] = (0, DEFAULT_SIZE),
) -> dict[str, Any]:
    """Microseconds per event with each history size, medians over alternating rounds."""
    messages = _messages(list(generate(contacts, events, seed=11)))
    runs: dict[int, list[dict[str, float]]] = {size: [] for size in sizes}
    with _counting_data_builds() as built:
        for _ in range(rounds):
            for size in sizes:
                runs[size].append(_one_run(messages, plans, size, persist_every))
    updates = sum(sample["score_updates"] for samples in runs.values() for sample in samples)
    per_event = {}
    for size, samples in runs.items():
        handle = statistics.median(s["handle_seconds"] for s in samples) / events * 1e6
        persist = statistics.median(s["persist_seconds"] for s in samples) / events * 1e6
        per_event[str(size)] = {
            "handle_us": round(handle, 2),
            "persist_us": round(persist, 2),
            "total_us": round(handle + persist, 2),
            "total_us_each_round": [
                round((s["handle_seconds"] + s["persist_seconds"]) / events * 1e6, 1)
                for s in samples
            ],
            "changelog_bytes_per_message": round(
                samples[0]["changelog_bytes"] / samples[0]["changelog_messages"], 1
            ),
        }
    return {
        "events": events,
        "contacts": contacts,
        "rounds": rounds,
        "persist_every": persist_every,
        "per_event": per_event,
        "data_builds_per_score_update": round(built[0] / updates, 3),
    }


@contextmanager
def _counting_data_builds() -> Iterator[list[int]]:
    """Counts how often a score update's `data` is built (the core's `_score_data`): the
    outbox and the history must share one build per score update."""
    original = core_engine._score_data
    built = [0]

    def counted(*args: Any) -> dict[str, Any]:
        built[0] += 1
        return original(*args)

    core_engine._score_data = counted  # type: ignore[assignment]  # same call, counted
    try:
        yield built
    finally:
        core_engine._score_data = original


def measure_bytes(plans: PlanSet, contacts: int, events: int) -> dict[str, Any]:
    """Record sizes of a simulated population with and without history, and of one contact
    with a full history in every plan."""
    states: dict[str, Any] = {}
    ledgers: dict[str, Ledger] = {}
    for event in generate(contacts, events, seed=11):
        step = score_event(states.get(event.subject), event, plans)
        states[event.subject] = step.state
        previous = ledgers.get(event.subject, EMPTY)
        ledgers[event.subject] = previous.recorded(step.outputs, DEFAULT_SIZE, plans.active_names)
    without = sorted(len(pack_record(0.0, {0: 1}, encode_state(s))) for s in states.values())
    with_history = sorted(
        len(pack_record(0.0, {0: 1}, encode_state(states[c]), ledgers[c].encoded())) for c in states
    )
    full_state, full_ledger = _full_history_contact(plans)
    history_bytes = len(full_ledger.encoded())
    entries = DEFAULT_SIZE * len(plans.active_names)
    return {
        "population": {
            "contacts": len(states),
            "events": events,
            "record_bytes_without_history": _spread(without),
            "record_bytes_with_history": _spread(with_history),
        },
        "full_history": {
            "history_size": DEFAULT_SIZE,
            "plans": sorted(plans.active_names),
            "history_bytes": history_bytes,
            "bytes_per_entry": round(history_bytes / entries, 1),
            "record_bytes": len(
                pack_record(0.0, {0: 1}, encode_state(full_state), full_ledger.encoded())
            ),
            "record_bytes_without_history": len(pack_record(0.0, {0: 1}, encode_state(full_state))),
        },
    }


def _full_history_contact(plans: PlanSet) -> tuple[Any, Ledger]:
    """A contact with more than `DEFAULT_SIZE` changes in each example plan: openings a day
    apart (lead-score) and a job title that changes back and forth (icp-fit), with UUID ids."""
    contact, base = "c-0000042", 1_767_225_600.0
    make = partial(TrackingEvent, source="/web", subject=contact)
    events = []
    for day in range(DEFAULT_SIZE + 5):
        at = base + day * 86_400.0
        events.append(make(id=str(uuid.uuid4()), type="email.opened", time=at, data={}))
        title = "president" if day % 2 == 0 else "engineer"
        attributes = {"attributes": {"job_title": title}}
        events.append(
            make(id=str(uuid.uuid4()), type="contact.updated", time=at + 60, data=attributes)
        )
    state, ledger = None, EMPTY
    for event in events:
        step = score_event(state, event, plans)
        state = step.state
        ledger = ledger.recorded(step.outputs, DEFAULT_SIZE, plans.active_names)
    return state, ledger


def _spread(values: Sequence[int]) -> dict[str, int]:
    return {
        "median": int(statistics.median(values)),
        "p90": values[int(0.9 * (len(values) - 1))],
        "p99": values[int(0.99 * (len(values) - 1))],
        "max": values[-1],
    }


@dataclass
class _SizedWorker(WorkerProcess):
    """The benchmark's worker process, with a history size."""

    history_size: int = DEFAULT_SIZE

    def command(self) -> list[str]:
        return [*super().command(), "--history-size", str(self.history_size)]


def measure_worker(
    contacts: int, events: int, rounds: int, sizes: Sequence[int] = (0, DEFAULT_SIZE)
) -> dict[str, Any]:
    """Whole worker processes on a real broker, one per run, each with a new consumer group
    and changelog over the same preloaded topic: events/s from the first event consumed
    until every offset is committed, and the worker's CPU time per event over that span."""
    runs: dict[int, list[dict[str, float]]] = {size: [] for size in sizes}
    prefix = f"benchhistory{uuid.uuid4().hex[:6]}."
    with broker_from_env() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        topics = create_input_topics(bootstrap, prefix, PARTITIONS)
        load_events(bootstrap, topics.events, generate(contacts, events, seed=11))
        try:
            for round_ in range(rounds):
                for size in sizes:
                    name = f"h{size}r{round_}"
                    worker = _SizedWorker(
                        bootstrap,
                        prefix,
                        name,
                        Path(tmp) / name,
                        Path(tmp) / f"{name}.log",
                        PARTITIONS,
                        history_size=size,
                    )
                    runs[size].append(_timed_worker(worker, bootstrap, topics.events))
        finally:
            delete_topics(bootstrap, prefix)
    result: dict[str, Any] = {"events": events, "contacts": contacts, "rounds": rounds}
    for size, samples in runs.items():
        result[str(size)] = {
            "events_per_second": round(statistics.median(s["rate"] for s in samples)),
            "cpu_us_per_event": round(statistics.median(s["cpu_us"] for s in samples), 1),
            "events_per_second_each_round": [round(s["rate"]) for s in samples],
        }
    return result


def _timed_worker(worker: _SizedWorker, bootstrap: str, topic: str) -> dict[str, float]:
    progress = GroupProgress(bootstrap, worker.group, topic)
    ends = progress.end_offsets()
    try:
        with running([worker]):
            worker.wait_serving()
            wait_for(lambda: metric_sum(worker.metrics(), CONSUMED) > 0, 300, "an event", 0.02)
            began, cpu = time.monotonic(), cpu_seconds(worker.pid)
            wait_for(lambda: progress.caught_up(ends), 900, "every offset committed", 0.2)
            seconds = time.monotonic() - began
            cpu = cpu_seconds(worker.pid) - cpu
    finally:
        progress.close()
    total = sum(ends.values())
    return {"rate": total / seconds, "cpu_us": cpu / total * 1e6}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--persist-every", type=int, default=500)
    parser.add_argument("--plans", type=Path, default=PLANS)
    parser.add_argument(
        "--worker", action="store_true", help="also whole worker processes on a real broker"
    )
    args = parser.parse_args(argv)
    plans = load_plans(args.plans)
    result = {
        "bytes": measure_bytes(plans, 2_000, 40_000),
        "time": measure_time(plans, args.contacts, args.events, args.rounds, args.persist_every),
    }
    if args.worker:
        result["worker"] = measure_worker(args.contacts, args.events, args.rounds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
