"""The cost of one timer pass over a large contact table, measured in-process.

A pass must cost in proportion to the contacts that are due, not to the contacts there are,
or a million quiet contacts would make every pass slow. So the worker's own `ContactStore`
(RocksDB, the worker's options) is filled with N records whose deadlines are spaced one
second apart, and the worker's own `Timers.run_pass` runs at the moment when a given fraction
of them is due. Only the Kafka send is replaced (by a stub that accepts the tick): that is
the producer's cost per tick, the same for any table size, and needs no broker.

Records carry real encoded states (from replaying simulated events through the core), so the
database has realistic sizes; the deadline index is what the pass reads.

The pass after a plan version takes over is measured too (`switch_pass`): it reads and decodes
every record once, whatever is due (`streams.worker.flow.switch`); here every contact is ticked,
as the sample states know no version.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from faust.types import ProducerT
from prometheus_client import CollectorRegistry

from bench.harness import contact_table
from streams.backtest.simulate import generate
from streams.models.plan_versions import PlanHistory
from streams.scoring import PlanSet, encode_state, load_plans, score_event
from streams.worker.flow.switch import SwitchPasses
from streams.worker.flow.timers import Timers
from streams.worker.plans.live import LivePlans
from streams.worker.runtime.fencing import Transactions
from streams.worker.state.states import ContactStates
from streams.worker.state.store import ContactStore, pack_record

BASE_TIME = 1_800_000_000.0
"""Deadline of contact 0; contact i's deadline is BASE_TIME + i seconds."""
WRITE_CHUNK = 20_000


class _AcceptingProducer:
    """Stands in for Faust's producer: takes the tick, sends nothing."""

    async def send(self, *args: Any, **kwargs: Any) -> None:
        """Accept one tick."""


def _sample_states(plans: PlanSet, contacts: int = 2_000, events: int = 40_000) -> list[bytes]:
    """Encoded states of a simulated population: real sizes and shapes, cheaply repeated."""
    states: dict[str, Any] = {}
    for event in generate(contacts, events, seed=11):
        step = score_event(states.get(event.contact_id), event, plans)
        states[event.contact_id] = step.state
    return [encode_state(state) for state in states.values()]


def _fill(store: ContactStore, contacts: int, partitions: int, states: Sequence[bytes]) -> None:
    """Contact i on partition i % partitions with deadline BASE_TIME + i."""
    pool = itertools.cycle(states)
    for start in range(0, contacts, WRITE_CHUNK):
        chunk: dict[int, dict[str, bytes]] = {p: {} for p in range(partitions)}
        for i in range(start, min(start + WRITE_CHUNK, contacts)):
            chunk[i % partitions][f"c-{i:07d}"] = pack_record(BASE_TIME + i, {0: i}, next(pool))
        for partition, records in chunk.items():
            store.write(partition, records)


async def _one_pass(
    store: ContactStore, history: PlanHistory, partitions: int, now: float
) -> tuple[float, int]:
    """Seconds and ticks of one pass by a fresh `Timers` (nothing in flight yet)."""
    producer = _AcceptingProducer()
    live = LivePlans(history, CollectorRegistry(), time.time)
    states = ContactStates(
        lambda: store,
        cast(Transactions, None),  # nothing is persisted here
        "bench-changelog",
        live,
        _nothing,
    )
    for partition in range(partitions):
        states.observe_time(partition, now)
    timers = Timers(
        "event",
        states,
        lambda: store,
        lambda: cast(ProducerT, producer),
        "ticks",
        SwitchPasses(live),
    )
    started = time.perf_counter()
    sent = await timers.run_pass(range(partitions))
    return time.perf_counter() - started, sent


async def _nothing() -> None:
    """No outputs are ever sent here, so the barrier has nothing to wait for."""


def measure(
    plans_path: Path,
    contacts: int,
    fractions: Sequence[float] = (0.0, 0.001, 0.01),
    partitions: int = 6,
    repeats: int = 5,
) -> dict[str, Any]:
    """Fill a store with `contacts` records, then time passes with each fraction due."""
    plans = load_plans(plans_path)
    single = PlanHistory.single(plans)
    states = _sample_states(plans)
    with tempfile.TemporaryDirectory(prefix="leadscore-bench-timers-") as tmp:
        table = contact_table(tmp, "bench-timers", partitions)
        store = table.store
        try:
            started = time.perf_counter()
            _fill(store, contacts, partitions, states)
            fill_seconds = time.perf_counter() - started
            loop = asyncio.new_event_loop()
            passes: list[dict[str, Any]] = []
            for fraction in fractions:
                # Deadlines are BASE_TIME + i: at BASE_TIME + k - 0.5 exactly k are due.
                now = BASE_TIME + round(fraction * contacts) - 0.5
                timed = [
                    loop.run_until_complete(_one_pass(store, single, partitions, now))
                    for _ in range(repeats)
                ]
                seconds = statistics.median(s for s, _ in timed)
                passes.append(
                    {
                        "due_fraction": fraction,
                        "due": timed[0][1],
                        "median_seconds": seconds,
                        "seconds": [s for s, _ in timed],
                    }
                )
            # A second version takes over just before the first deadline: nothing is due.
            switched = single.then(replace(single.latest, label="next", effective_from=BASE_TIME))
            switch = loop.run_until_complete(_one_pass(store, switched, partitions, BASE_TIME))
            loop.close()
        finally:
            store.close()
    return {
        "contacts": contacts,
        "partitions": partitions,
        "fill_seconds": fill_seconds,
        "state_bytes_median": statistics.median(len(s) for s in states),
        "passes": passes,
        "switch_pass": {"seconds": switch[0], "ticks": switch[1]},
    }
