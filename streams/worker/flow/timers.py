"""Timers: find the contacts whose deadline has passed and send them a tick.

Faust timers run per worker, not per key, and cannot write tables. So a periodic pass reads
the deadline index of each partition this worker owns (`ContactStore.due`: only the due
entries, oldest first) and sends a tick message, keyed by contact, to the internal ticks
topic, on the same partition number. The worker consumes ticks with the events, so a penalty
goes through the same code path, the same state and the same changelog as an event, and
is exactly as durable.

`now` is the wall clock (`--clock wall`) or the partition's stream time, the largest event
time consumed on it (`--clock event`): a replay of historical events then fires deadlines
exactly as the backtest does. A tick carries the `now` of its pass; the processor advances its
contact to that time, but never beyond the partition's clock when it processes the tick
(`Processor._tick_time` says why).

A contact whose tick is in flight is not ticked again until its state is persisted (its
index entry then moves) or the tick changed nothing.

When a plan version takes over, the same pass also ticks the contacts that the deadline
index does not know must switch (`streams.worker.flow.switch`).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable
from itertools import islice

from faust.types import ProducerT

from streams.worker.flow.switch import SwitchPasses
from streams.worker.settings import Clock
from streams.worker.state.states import ContactStates, Persisted
from streams.worker.state.store import ContactStore

MAX_TICKS_PER_PASS = 50_000
"""Per partition and pass; the rest waits for the next pass, so one pass cannot flood."""
_TICK = struct.Struct(">d")


def encode_tick(now: float) -> bytes:
    """A tick's value: the `now` its contact is advanced to."""
    return _TICK.pack(now)


def decode_tick(value: bytes | None) -> float:
    (now,) = _TICK.unpack(value or b"")
    return float(now)


class Timers:
    """The deadline pass and the bookkeeping of ticks in flight."""

    def __init__(
        self,
        clock: Clock,
        states: ContactStates,
        store: Callable[[], ContactStore],
        producer: Callable[[], ProducerT],
        ticks_topic: str,
        switches: SwitchPasses | None = None,
    ) -> None:
        self._clock = clock
        self._switches = switches
        self._states = states
        self._store = store
        self._producer = producer
        self._ticks_topic = ticks_topic
        self._in_flight: dict[int, dict[str, float]] = {}

    def now(self, partition: int) -> float | None:
        """The time deadlines are compared with; None before a partition's first event."""
        if self._clock == "wall":
            return time.time()
        return self._states.stream_time(partition)

    async def run_pass(self, partitions: Iterable[int]) -> int:
        """Send a tick for every due contact not already ticked; return how many were sent."""
        sent = 0
        producer = self._producer()
        for partition in partitions:
            now = self.now(partition)
            if now is None:
                continue
            in_flight = self._in_flight.setdefault(partition, {})
            # Collected before sending: the database may close (rebalance) during an await.
            due = [
                (deadline, contact_id)
                for deadline, contact_id in islice(
                    self._store().due(partition, now), MAX_TICKS_PER_PASS
                )
                if in_flight.get(contact_id) != deadline
            ]
            tick = encode_tick(now)
            for deadline, contact_id in due:
                in_flight[contact_id] = deadline
                await self._send(producer, partition, contact_id, tick)
            sent += len(due)
            if self._switches is not None:
                sent += await self._switch_pass(self._switches, producer, partition, now)
        return sent

    async def _switch_pass(
        self, switches: SwitchPasses, producer: ProducerT, partition: int, now: float
    ) -> int:
        """Tick every contact of the partition that must switch to the version in force at
        `now` and would not be ticked otherwise (`streams.worker.flow.switch`)."""
        target = switches.target(self._store(), partition, now)
        if target is None:
            return 0
        in_flight = self._in_flight[partition]
        tick = encode_tick(now)
        sent = 0
        found = False
        after: str | None = None
        while True:
            records = self._store().records(partition, after)
            try:
                stale, after = switches.scan(records, now, target)
            finally:
                records.close()  # no RocksDB iterator survives the awaits below
            found = found or bool(stale)
            for contact_id, deadline in stale:
                if contact_id not in in_flight:
                    in_flight[contact_id] = deadline
                    await self._send(producer, partition, contact_id, tick)
                    sent += 1
            if after is None:
                switches.finished(self._store(), partition, target, ticked=found)
                return sent
            await asyncio.sleep(0)  # let events through between slices
            if self._in_flight.get(partition) is not in_flight:
                return sent  # the partition moved meanwhile: its new owner makes the pass

    async def _send(
        self, producer: ProducerT, partition: int, contact_id: str, tick: bytes
    ) -> None:
        await producer.send(
            self._ticks_topic,
            contact_id.encode(),
            tick,
            partition=partition,
            timestamp=None,
            headers=None,
        )

    async def wake(self, partition: int) -> None:
        """A tick for no contact: the processor handles a message of the partition soon,
        which a partition waiting for its rescore swap needs even when no event comes."""
        now = self.now(partition)
        await self._send(self._producer(), partition, "", encode_tick(now or time.time()))

    def done(self, partition: int, contact_id: str) -> None:
        """A tick was processed without a state to change."""
        self._in_flight.get(partition, {}).pop(contact_id, None)

    def settled(self, persisted: Persisted) -> None:
        """States were persisted: their index entries are current again."""
        for partition, contact_ids in persisted.contacts.items():
            in_flight = self._in_flight.get(partition)
            if in_flight:
                for contact_id in contact_ids:
                    in_flight.pop(contact_id, None)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved to another worker, which will tick them itself."""
        partitions = set(partitions)
        for partition in partitions:
            self._in_flight.pop(partition, None)
        if self._switches is not None:
            self._switches.forget(partitions)
