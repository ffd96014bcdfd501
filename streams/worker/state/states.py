"""Contact states between the processor and the disk: a write-back cache persisted at commit.

Why not `table[key] = state` per event: Faust writes RocksDB at once and sends the changelog
later, so after a kill -9 the local state can already contain an event whose offset was never
committed and whose alert was never acknowledged. The event is then consumed again, the core
sees a duplicate, and the alert is lost for good. Here a state becomes durable only in
`persist()`, which runs just before every offset commit, in this order:

1. take a snapshot of the states written since the last persist (the processor keeps running
   and writes into a fresh dict);
2. wait until every output sent so far is acknowledged (`outputs_barrier`); the processor sends
   an event's outputs before it writes its state, so this covers every state in the snapshot;
3. send each snapshot state once to the changelog, and, when its current scores changed,
   its `lead-scores` record (`streams.worker.state.leads`), and commit the worker's transaction
   with the consumed offsets Faust computed: outputs, changelog and lead-scores records and
   input offsets become visible to `read_committed` readers together, and a worker whose
   group generation is over fails here, before writing anything (`streams.worker.runtime.fencing`);
   the acknowledged changelog offsets are known once this returns;
4. write the states, their deadline and leads index entries, the stream times and the
   changelog offset to RocksDB in one batch per partition.

A crash anywhere leaves either an aborted transaction (nothing of it is visible: its events
are consumed again from the committed offsets and send their outputs once more, in a
transaction of their own) or a committed one, whose states the next owner recovers from the
changelog (a local RocksDB behind it catches up from the changelog too). A `read_committed`
reader sees every output once.
Writing each key once per commit also coalesces the changelog: a contact with ten events in a
commit interval costs one changelog message, not ten.
"""

from __future__ import annotations

import asyncio
import struct
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from streams.scoring import ContactState, decode_state, encode_state, next_deadline
from streams.worker.plans.live import LivePlans
from streams.worker.runtime.fencing import Transactions
from streams.worker.state.history import EMPTY, Ledger
from streams.worker.state.leads import LeadRecords, LeadUpdate
from streams.worker.state.store import (
    Applied,
    ContactStore,
    contact_key,
    meta_key,
    pack_record,
    record_applied,
    record_history,
    record_state,
)

_TIME = struct.Struct(">d")
STREAM_TIME = "stream-time"
"""Metadata key of a partition's stream time (the largest event time consumed)."""
Origin = tuple[int, int]
"""Where an event was first consumed: input partition and offset (also for a re-routed one)."""


@dataclass(slots=True)
class Held:
    """A contact's state and, per input partition, the offset of the last event applied to it.

    The offsets let the processor skip an event consumed again after a crash without asking
    the core, whose duplicate check remembers only a bounded number of event ids. An event is
    identified by its origin: where it was consumed from the input topic, also when a producer
    put it on a partition that does not own its key and it reached its owner through the
    rerouted topic (`streams.worker.flow.reroute`, whose forwards carry their origin). Events of one
    input partition reach a contact's owner in that partition's order, directly or forwarded,
    so an origin at or below the partition's applied offset is already in the state. That
    also recognises an event forwarded twice (a crash after the forward, before its input
    offset was committed), however many events of the contact came in between.
    """

    state: ContactState
    applied: Applied = field(default_factory=dict)
    history: Ledger = EMPTY
    """Its last score changes (`streams.worker.state.history`), stored and recovered with it."""

    def applied_at(self, origin: Origin) -> bool:
        """Whether the event first consumed at `origin` is already in this state."""
        partition, offset = origin
        return offset <= self.applied.get(partition, -1)

    def after(self, state: ContactState, origin: Origin, history: Ledger | None = None) -> Held:
        """`state`, with the event from `origin` as its input partition's last applied, and
        `history` (by default this one's)."""
        partition, offset = origin
        kept = self.history if history is None else history
        return Held(state, {**self.applied, partition: offset}, kept)


@dataclass(frozen=True, slots=True)
class Persisted:
    """What one persist made durable: contacts per partition (the timer uses it)."""

    contacts: dict[int, list[str]]

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.contacts.values())


class ContactStates:
    """Read and write contact states by partition; see the module docstring for durability."""

    def __init__(
        self,
        store: Callable[[], ContactStore],
        producer: Transactions,
        changelog_topic: str,
        plans: LivePlans,
        outputs_barrier: Callable[[], Awaitable[None]],
        leads: LeadRecords | None = None,
    ) -> None:
        """`leads`: what publishes `lead-scores` and feeds the leads index (None: neither,
        for the benchmark that measures their cost)."""
        self._store = store
        self._leads = leads
        self._producer = producer
        self._changelog_topic = changelog_topic
        self._plans = plans
        self._outputs_barrier = outputs_barrier
        self._dirty: dict[tuple[int, str], Held] = {}
        """Decoded states by (partition, contact id): a contact id is only ever looked up on
        its own partition, never matched with a state of another. These are the states
        written since the last persist. Durable states are not kept decoded:
        the cyclic garbage collector rescans every live container object in its full passes,
        and 20,000 cached states made those passes 300-450 ms event-loop stalls that held
        the p99 latency above 250 ms (bench/README.md). RocksDB's block cache keeps the hot
        records as bytes, which the collector does not scan."""
        self._persisting: dict[tuple[int, str], bytes] = {}
        self._read: dict[tuple[int, str], bytes | None] = {}
        """The stored records `get` read since the last persist (None: no record), which the
        persist compares its writes with (index entries, `lead-scores` digests) instead of
        reading each again: bytes, which the collector does not scan."""
        self._stream_times: dict[int, float] = {}
        self._noted: defaultdict[int, dict[str, bytes]] = defaultdict(dict)
        self._times_changed: set[int] = set()
        self._lock = asyncio.Lock()
        self._poisoned: BaseException | None = None

    def get(self, partition: int, contact_id: str) -> Held | None:
        """The contact's latest state on `partition`; the caller owns it (the core may change
        it in place)."""
        key = (partition, contact_id)
        dirty = self._dirty.get(key)
        if dirty is not None:
            return dirty
        record = self._persisting.get(key)
        if record is None:
            record = self._read[key] = self._store().read(partition, contact_id)
        return None if record is None else _held(record)

    def durable(self, partition: int, contact_id: str) -> Held | None:
        """The contact's state as of the last persist, ignoring what is written since: what
        the HTTP views show, so that a contact's look-up, its place in `GET /leads` and its
        `lead-scores` record change together, at the commit (the processor uses `get`)."""
        record = self._store().read(partition, contact_id)
        return None if record is None else _held(record)

    def contact_ids(self, partition: int) -> set[str]:
        """Every contact `get` knows on `partition`: durable, being persisted, or written since."""
        ids = set(self._store().contact_ids(partition))
        for keys in (self._persisting, self._dirty):
            ids.update(contact_id for p, contact_id in keys if p == partition)
        return ids

    def cached(self, partition: int, contact_id: str) -> bool:
        """Whether `get` hands out the cached object (changed since the last persist) rather
        than one decoded for the caller: only that one must be copied before the core changes
        it, for a failure to leave the contact as it was (a decoded one is simply dropped)."""
        return (partition, contact_id) in self._dirty

    def put(self, partition: int, contact_id: str, held: Held) -> None:
        self._dirty[(partition, contact_id)] = held

    def note(self, partition: int, name: str, value: bytes) -> None:
        """Metadata made durable with the partition's next persist, in the same writes as the
        states put before it (local and changelog: a partition's next owner sees it too)."""
        self._noted[partition][name] = value

    def meta(self, partition: int, name: str) -> bytes | None:
        """A partition's metadata: noted and not yet persisted, or durable."""
        noted = self._noted.get(partition, {}).get(name)
        return noted if noted is not None else self._store().meta(partition, name)

    def observe_time(self, partition: int, event_time: float) -> None:
        """Move the partition's stream time forward (never back)."""
        current = self.stream_time(partition)
        if current is None or event_time > current:
            self._stream_times[partition] = event_time
            self._times_changed.add(partition)

    def stream_time(self, partition: int) -> float | None:
        """Largest event time consumed on the partition, surviving restarts."""
        known = self._stream_times.get(partition)
        if known is not None:
            return known
        raw = self._store().meta(partition, STREAM_TIME)
        if raw is None:
            return None
        (stored,) = _TIME.unpack(raw)
        self._stream_times[partition] = stored
        return float(stored)

    def forget(self, partitions: set[int]) -> None:
        """Drop the stream times of partitions this worker no longer owns (after a persist):
        if one comes back, its time is that of the changelog, not ours."""
        for partition in partitions:
            self._stream_times.pop(partition, None)
            self._times_changed.discard(partition)
            self._noted.pop(partition, None)
        self._read = {key: record for key, record in self._read.items() if key[0] not in partitions}

    def poison(self, error: BaseException) -> None:
        """Never persist again: the core failed mid-event, so a cached state may be half
        changed, or the worker was fenced, so its cached states are stale. The worker stops
        without committing, and its successor replays from the last good commit."""
        self._poisoned = error

    @property
    def poisoned(self) -> bool:
        return self._poisoned is not None

    async def persist(self, offsets: Mapping[tuple[str, int], int] | None = None) -> Persisted:
        """Make every state written so far durable, in the order the module docstring gives,
        in one transaction with `offsets` (topic and partition: the next offset to consume)."""
        async with self._lock:
            if self._poisoned is not None:
                raise RuntimeError("not persisting after a scoring failure") from self._poisoned
            snapshot, self._dirty = self._dirty, {}
            read, self._read = self._read, {}
            metas, self._noted = self._noted, defaultdict(dict)
            for partition in self._times_changed:
                metas[partition][STREAM_TIME] = _TIME.pack(self._stream_times[partition])
            self._times_changed = set()
            history = self._plans.history
            leads = (
                LeadUpdate()
                if self._leads is None
                else self._leads.update(((k, h.state) for k, h in snapshot.items()), history, read)
            )
            self._persisting = {
                key: pack_record(
                    next_deadline(held.state, history),
                    held.applied,
                    encode_state(held.state),
                    held.history.encoded(),
                    leads.blocks.get(key, b""),
                )
                for key, held in snapshot.items()
            }
            try:
                await self._outputs_barrier()
                written = await self._send_changelog(metas, leads, offsets or {})
                self._write(written, metas, read)
            finally:
                self._persisting = {}
        persisted: dict[int, list[str]] = defaultdict(list)
        for partition, contact_id in snapshot:
            persisted[partition].append(contact_id)
        return Persisted(dict(persisted))

    async def _send_changelog(
        self,
        metas: dict[int, dict[str, bytes]],
        leads: LeadUpdate,
        offsets: Mapping[tuple[str, int], int],
    ) -> dict[int, int]:
        """Send the snapshot and the changed metadata (stream times, `note`s) to the
        changelog, so that whoever recovers a partition also knows them, and the changed
        `lead-scores` records, and commit them with `offsets`; the last changelog offset acked
        per partition."""
        records = [
            (partition, contact_key(contact_id), record)
            for (partition, contact_id), record in self._persisting.items()
        ]
        records += [
            (p, meta_key(name), value) for p, meta in metas.items() for name, value in meta.items()
        ]
        producer, topic = self._producer, self._changelog_topic
        for partition, key, value in records:
            await producer.send(topic, key, value, [], partition)
        if self._leads is not None:
            await self._leads.send(leads, producer)
        await producer.commit(offsets)
        return {
            partition: producer.acknowledged[(topic, partition)]
            for partition in {partition for partition, _, _ in records}
        }

    def _write(
        self,
        offsets: dict[int, int],
        metas: dict[int, dict[str, bytes]],
        read: Mapping[tuple[int, str], bytes | None],
    ) -> None:
        by_partition: dict[int, dict[str, bytes]] = defaultdict(dict)
        previous: dict[int, dict[str, bytes | None]] = defaultdict(dict)
        for key, record in self._persisting.items():
            partition, contact_id = key
            by_partition[partition][contact_id] = record
            if key in read:
                previous[partition][contact_id] = read[key]
        store = self._store()
        for partition in by_partition.keys() | metas.keys():
            store.write(
                partition,
                by_partition.get(partition, {}),
                changelog_offset=offsets.get(partition),
                meta=metas.get(partition) or None,
                previous=previous.get(partition),
            )


def _held(record: bytes) -> Held:
    return Held(
        decode_state(record_state(record)), record_applied(record), Ledger(record_history(record))
    )
