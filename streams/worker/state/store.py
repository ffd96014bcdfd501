"""The contact table on disk: one RocksDB database per partition, with a deadline index.

Each partition's database holds three kinds of keys, told apart by their first byte:

- `c<contact id>`: the contact's record, `>d` next deadline (+inf for none), `>H` a count
  and that many `>Iq` pairs (input partition, offset of the last event applied to the contact
  that was consumed there), then, when the count's top bit is set, `>I` a length and that
  many bytes of score history (`streams.worker.state.history`), then, when the count's next bit is
  set, `>I` a length and that many bytes of leads block (`streams.worker.state.lead_index`: the
  scores `GET /leads` orders by), then the core's encoded state. The same key and value go to
  the changelog, so recovery restores all of it. A record without history or leads block has
  the layout it had before they existed, so older records read as they are.
- `d<>d deadline><contact id>`: the deadline index, empty values, ordered by time, so the
  timer pass reads only the entries that are due: its cost grows with the due count, not with
  the number of contacts. It is derived data and never sent to the changelog; every write
  of a record (from the worker or from changelog recovery) updates it in the same WriteBatch,
  so it cannot disagree with the records after a crash.
- `s...` and `h...`: the leads index and score histogram (`streams.worker.state.lead_index`),
  derived from the leads blocks in the same batch, like the deadline index.
- `m<name>`: per-partition metadata, written in the same batch: the stream time (which also
  goes to the changelog, so a worker taking the partition over knows it) and the contact
  count (derived, kept locally).

A newly assigned partition behind its changelog is first caught up by `catch_up`, which
reads the changelog with librdkafka and writes large batches; Faust's recovery then reads
only what is left. Into an empty database (a recovery from nothing) it writes the records
alone, then derives the indexes and the count from them in one pass (`_derive`): a `m`
mark, set before the first record and cleared by the pass's last write, says that a
partition's derived keys are still to be built, so a crash in between is completed at the
next catch-up. Faust's own changelog offset key (`__faust\\0offset__`) shares the
database; it is written in the same batch as the records it covers, so a crash cannot leave
the offset ahead of them.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Any, cast

import faust
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from faust.stores import rocksdb
from faust.types import TP, EventT, StoreT
from rocksdict import Rdict, WriteBatch
from yarl import URL

from streams.kafka.security import KafkaConnection
from streams.worker.state.lead_index import (
    ENTRY,
    HISTOGRAM,
    Entry,
    entries,
    histogram,
    index_keys,
    pack_count,
    read_count,
)

CATCH_UP_BATCH = 10_000
CATCH_UP_FETCH_BYTES = 64 * 1024**2
DERIVE_BATCH = 50_000
"""Records per write of the pass that derives a partition's indexes (`ContactStore._derive`)."""

CONTACT = b"c"
INDEX = b"d"
META = b"m"
_DEADLINE = struct.Struct(">d")
_HEADER = struct.Struct(">dH")
_APPLIED = struct.Struct(">Iq")
_LENGTH = struct.Struct(">I")
_WITH_HISTORY = 0x8000
"""Top bit of the applied count: a history block follows the applied pairs."""
_WITH_LEADS = 0x4000
"""Next bit: a leads block follows (the history block, if any)."""
_FLAGS = _WITH_HISTORY | _WITH_LEADS
Applied = dict[int, int]
"""Input partition -> offset there of the last event applied to a contact."""
_COUNT = META + b"contacts"
_UNDERIVED = META + b"underived"
"""Set while a bulk catch-up's records lack their derived keys (local, never in the changelog)."""
_DERIVED_PREFIXES = (INDEX, ENTRY, HISTOGRAM)


def contact_key(contact_id: str) -> bytes:
    return CONTACT + contact_id.encode()


def meta_key(name: str) -> bytes:
    return META + name.encode()


def pack_record(
    deadline: float | None,
    applied: Applied,
    state: bytes,
    history: bytes = b"",
    leads: bytes = b"",
) -> bytes:
    """Deadline first, so the index can be maintained without decoding the state; then the
    input offsets of the last events applied, which make a replay after a crash exact however
    many events it holds (the core's own duplicate check remembers only the latest event ids).
    One per input partition: a re-routed event is identified by where it was first consumed
    (`streams.worker.flow.reroute`), and offsets of different partitions are not comparable. Then
    the score history and the leads block, if any: in the record, they are made durable in the
    same write as the state they belong to."""
    if len(applied) >= _WITH_LEADS:
        raise ValueError(f"{len(applied)} input partitions in one record: at most 16,383")
    count = len(applied) | (_WITH_HISTORY if history else 0) | (_WITH_LEADS if leads else 0)
    header = _HEADER.pack(math.inf if deadline is None else deadline, count)
    blocks = [
        part for block in (history, leads) if block for part in (_LENGTH.pack(len(block)), block)
    ]
    return b"".join([header, *(_APPLIED.pack(p, o) for p, o in applied.items()), *blocks, state])


def record_deadline(record: bytes) -> float | None:
    (deadline,) = _DEADLINE.unpack_from(record)
    return None if math.isinf(deadline) else float(deadline)


def record_applied(record: bytes) -> Applied:
    end, _ = _applied_end(record)
    return dict(_APPLIED.iter_unpack(record[_HEADER.size : end]))


def record_history(record: bytes) -> bytes:
    """The record's score history block (empty when it has none)."""
    start, end = _history_span(record)
    return record[start:end]


def record_leads(record: bytes) -> bytes:
    """The record's leads block (empty when it has none)."""
    start, end = _leads_span(record)
    return record[start:end]


def record_state(record: bytes) -> bytes:
    return record[_leads_span(record)[1] :]


def _applied_end(record: bytes) -> tuple[int, int]:
    """Where the applied pairs end, and the flags of the blocks that follow them."""
    _, count = _HEADER.unpack_from(record)
    return _HEADER.size + (count & ~_FLAGS) * _APPLIED.size, count & _FLAGS


def _block(record: bytes, start: int, present: bool) -> tuple[int, int]:
    """Where the block at `start` starts and ends (both `start` when it is absent)."""
    if not present:
        return start, start
    (length,) = _LENGTH.unpack_from(record, start)
    return start + _LENGTH.size, start + _LENGTH.size + length


def _history_span(record: bytes) -> tuple[int, int]:
    """Where the history block starts and ends (both where the next part starts when none)."""
    start, flags = _applied_end(record)
    return _block(record, start, bool(flags & _WITH_HISTORY))


def _leads_span(record: bytes) -> tuple[int, int]:
    """Where the leads block starts and ends (both where the state starts when none)."""
    start, flags = _applied_end(record)
    _, end = _block(record, start, bool(flags & _WITH_HISTORY))
    return _block(record, end, bool(flags & _WITH_LEADS))


def _index_key(deadline: float, key: bytes) -> bytes:
    # Big-endian IEEE doubles of non-negative numbers sort like the numbers themselves.
    return INDEX + _DEADLINE.pack(max(deadline, 0.0)) + key


class ContactStore(rocksdb.Store):
    """Faust's RocksDB store, plus the record layout and deadline index described above.

    Faust keeps managing the databases (opening on assignment, closing on revocation,
    recovery from the changelog, standby replicas); the worker reads and writes through the
    partition-explicit methods here, because its writes happen at commit time, outside the
    stream iteration that Faust's own `table[key] = value` requires.
    """

    def read(self, partition: int, contact_id: str) -> bytes | None:
        value: bytes | None = self._db(partition).get(contact_key(contact_id))
        return value

    def meta(self, partition: int, name: str) -> bytes | None:
        value: bytes | None = self._db(partition).get(meta_key(name))
        return value

    def contact_count(self, partition: int) -> int:
        raw = self._db(partition).get(_COUNT)
        return int(raw) if raw else 0

    def contact_ids(self, partition: int) -> Iterator[str]:
        """Every contact with a record on `partition` (a rescore visits them all)."""
        iterator = self._db(partition).iter()
        iterator.seek(CONTACT)
        while iterator.valid():
            key: bytes = iterator.key()
            if not key.startswith(CONTACT):
                return
            yield key[len(CONTACT) :].decode()
            iterator.next()

    def due(self, partition: int, until: float) -> Iterator[tuple[float, str]]:
        """`(deadline, contact id)` of the index entries at or before `until`, oldest first."""
        end = _index_key(until, b"\xff")
        iterator = self._db(partition).iter()
        iterator.seek(INDEX)
        while iterator.valid():
            key: bytes = iterator.key()
            if key >= end or not key.startswith(INDEX):
                return
            (deadline,) = _DEADLINE.unpack_from(key, len(INDEX))
            yield deadline, key[len(INDEX) + _DEADLINE.size :].decode()
            iterator.next()

    def leads(
        self, partition: int, plan: str, min_score: int | None, after: bytes | None, limit: int
    ) -> list[Entry]:
        """Up to `limit` contacts of `plan` at or above `min_score` on `partition`, highest
        first, from just after the cursor `after` (`streams.worker.state.lead_index`)."""
        return entries(self._db(partition), plan, min_score, after, limit)

    def score_counts(self, partition: int, plan: str) -> list[tuple[int, int]]:
        """(score, contacts with it) in `plan` on `partition`, highest first."""
        return list(histogram(self._db(partition), plan))

    def records(
        self, partition: int, after: str | None = None
    ) -> Generator[tuple[str, bytes], None, None]:
        """`(contact id, record)` of every contact, in key order, from just after `after`
        (a pass over a whole partition in slices: `streams.worker.flow.switch`); close it
        before the database may close."""
        iterator = self._db(partition).iter()
        if after is None:
            iterator.seek(CONTACT)
        else:
            iterator.seek(contact_key(after) + b"\0")
        while iterator.valid():
            key: bytes = iterator.key()
            if not key.startswith(CONTACT):
                return
            yield key[len(CONTACT) :].decode(), iterator.value()
            iterator.next()

    def write(
        self,
        partition: int,
        records: Mapping[str, bytes],
        *,
        changelog_offset: int | None = None,
        meta: Mapping[str, bytes] | None = None,
        previous: Mapping[str, bytes | None] | None = None,
    ) -> None:
        """Write records, their index entries, metadata and changelog offset atomically;
        `previous` holds what the store has now for some of the contacts (None: no record),
        read earlier, so they are not read again."""
        db = self._db(partition)
        batch = _Batch(db)
        known = previous or {}
        for contact_id, record in records.items():
            if contact_id in known:
                batch.known(contact_key(contact_id), known[contact_id])
            batch.put(contact_key(contact_id), record)
        for name, value in (meta or {}).items():
            batch.put_raw(meta_key(name), value)
        batch.commit(changelog_offset, self.offset_key)

    def apply_changelog_batch(
        self, batch: Iterable[EventT[Any]], to_key: Any, to_value: Any
    ) -> None:
        """Recovery and standby: Faust's version, plus the index and the contact count."""
        self._apply_changelog(
            (event.message.partition, event.message.offset, event.message.key, event.message.value)
            for event in batch
        )

    def _apply_changelog(
        self,
        records: Iterable[tuple[int, int, bytes | None, bytes | None]],
        bulk: frozenset[int] = frozenset(),
    ) -> None:
        """Write `(partition, offset, key, value)` changelog records, one batch per partition
        with the last offset, so the records and the offset Faust resumes from move together.
        Into the `bulk` partitions the records alone: `_derive` builds the rest later."""
        batches: dict[int, _Batch] = {}
        offsets: dict[int, int] = {}
        for partition, offset, key, value in records:
            if key is None:
                raise ValueError(f"changelog message without a key at {partition}@{offset}")
            staged = batches.get(partition)
            if staged is None:
                staged = batches[partition] = _Batch(
                    self._db(partition), derived=partition not in bulk
                )
            if key.startswith(META):
                staged.put_raw(key, value)
            else:
                staged.put(key, value)
            offsets[partition] = max(offset, offsets.get(partition, -1))
        for partition, staged in batches.items():
            staged.commit(offsets[partition], self.offset_key)

    def catch_up(
        self, topic: str, partitions: list[int], stop: Callable[[], bool], deadline: float
    ) -> None:
        """Read `topic`'s partitions from the local offset to their end, or until `stop()` (a
        rebalance) or the `time.monotonic()` deadline (`recovery.CATCH_UP_LIMIT`).

        Faust's own recovery delivers each changelog message through its consumer, conductor
        and queues: a few thousand messages/s, minutes for a million contacts. Reading with
        librdkafka and writing large batches is more than ten times faster (bench/README.md).
        Stopping early is safe: each batch writes its records and their offset together. For
        a thread (`streams.worker.state.recovery`), so the event loop keeps running meanwhile.

        Every partition behind is read here, however little, up to its end: the changelog is
        written in transactions (`streams.worker.runtime.fencing`), so it ends with a commit marker,
        an offset that no consumer ever receives. Faust's recovery waits for a message at the
        offset before the end, which would never come; here the offset of the end is stored.

        An empty database gets the records alone, and its indexes and count in one pass at
        the end (`_derive`), also when the read stops early: keeping them record by record
        reads each key's previous record and moves its index entries, which made a recovery
        of 1,000,000 contacts take 2.6 times as long (bench/README.md, "Recovery of 1,000,000
        contacts").
        """
        connection: KafkaConnection = cast(Any, self.app).kafka  # WorkerApp.kafka
        consumer = Consumer(
            connection.librdkafka(
                {
                    "group.id": f"{self.app.conf.id}-catch-up",
                    "enable.auto.commit": False,
                    "fetch.max.bytes": CATCH_UP_FETCH_BYTES,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",  # skip what a fenced worker wrote
                }
            )
        )
        bulk: set[int] = set()
        try:
            behind: set[int] = set()
            starts: list[TopicPartition] = []
            for partition in partitions:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=30
                )
                local = self.persisted_offset(TP(topic, partition))
                start = 0 if local is None else local + 1
                db = self._db(partition)
                if local is None and high > start:
                    db.put(_UNDERIVED, b"")
                if db.get(_UNDERIVED) is not None:
                    bulk.add(partition)
                if high > start:
                    behind.add(partition)
                    starts.append(TopicPartition(topic, partition, start))
            if starts:
                consumer.assign(starts)
            while behind and not stop() and time.monotonic() < deadline:
                records = []
                ends: dict[int, int] = {}
                for message in consumer.consume(CATCH_UP_BATCH, timeout=1.0):
                    error = message.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        behind.discard(cast(int, message.partition()))
                        ends[cast(int, message.partition())] = cast(int, message.offset()) - 1
                    elif error is not None:
                        raise KafkaException(error)
                    else:
                        partition, offset = (
                            cast(int, message.partition()),
                            cast(int, message.offset()),
                        )
                        records.append((partition, offset, message.key(), message.value()))
                self._apply_changelog(records, frozenset(bulk))
                for partition, end in ends.items():  # past any trailing transaction marker
                    self.write(partition, {}, changelog_offset=end)
        finally:
            consumer.close()
            for partition in sorted(bulk):
                self._derive(partition)

    def _derive(self, partition: int) -> None:
        """Build the partition's deadline index, leads index, histogram and contact count
        from its records in one pass, as a bulk catch-up left them; the last write clears
        the mark. What a crashed pass or a standby wrote meanwhile is deleted first."""
        db = self._db(partition)
        for prefix in _DERIVED_PREFIXES:
            db.delete_range(prefix, bytes([prefix[0] + 1]))
        db.delete(_COUNT)
        batch = _Batch(db)
        records = self.records(partition)
        try:
            for contact_id, record in records:
                batch.derive(contact_key(contact_id), record)
                if batch.size >= DERIVE_BATCH:
                    batch.commit(None, self.offset_key)
                    batch = _Batch(db)
        finally:
            records.close()
        batch.put_raw(_UNDERIVED, None)
        batch.commit(None, self.offset_key)

    async def stop(self) -> None:
        """Keep the databases open: Faust stops tables before the consumer's final commit,
        whose persist still writes here. `close()` runs after that commit."""

    def close(self) -> None:
        """Close the databases (flushing RocksDB's memtables) instead of leaving it to GC."""
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()

    def _db(self, partition: int) -> Rdict:
        return cast(Rdict, self._db_for_partition(partition))


def _summary(record: bytes | None) -> tuple[bool, float | None, bytes]:
    """What a batch tracks of a key's record: present, its deadline, its leads block."""
    if record is None:
        return False, None, b""
    return True, record_deadline(record), record_leads(record)


class _Batch:
    """Record writes to one partition database, with their index and count bookkeeping.

    What a key holds is read from the database once, then tracked here, so a key written
    several times in one batch (common in changelog recovery) leaves no stale index entry and
    is counted right. The leads index (`streams.worker.state.lead_index`) is kept the same way: an
    unchanged leads block touches no key, a changed one moves the contact's entries and
    histogram counts.
    """

    def __init__(self, db: Rdict, *, derived: bool = True) -> None:
        """`derived=False`: records are written alone (a bulk catch-up, `ContactStore._derive`
        builds the rest)."""
        self.db = db
        self.derived = derived
        self.size = 0
        """Records staged."""
        self.batch = WriteBatch(raw_mode=True)
        self._current: dict[bytes, tuple[bool, float | None, bytes]] = {}
        """Key -> (present, deadline, leads block) as of the writes staged so far."""
        self._count_delta = 0
        self._histogram: dict[bytes, int] = {}
        """Histogram key -> change of its count in this batch."""

    def put(self, key: bytes, record: bytes | None) -> None:
        self.size += 1
        if not self.derived:
            self.put_raw(key, record)
            return
        present, old, old_leads = self._current.get(key) or self._stored(key)
        contact_id = key[len(CONTACT) :]
        if old is not None:
            self.batch.delete(_index_key(old, contact_id))
        leads = b"" if record is None else record_leads(record)
        if leads != old_leads:
            self._move_leads(contact_id, old_leads, leads)
        if record is None:
            self.batch.delete(key)
            self._count_delta -= present
            self._current[key] = (False, None, b"")
            return
        new = record_deadline(record)
        self.batch.put(key, record)
        if new is not None:
            self.batch.put(_index_key(new, contact_id), b"")
        self._count_delta += not present
        self._current[key] = (True, new, leads)

    def derive(self, key: bytes, record: bytes) -> None:
        """The derived keys of a record already stored, whose earlier ones were deleted."""
        self.size += 1
        contact_id = key[len(CONTACT) :]
        deadline = record_deadline(record)
        if deadline is not None:
            self.batch.put(_index_key(deadline, contact_id), b"")
        self._move_leads(contact_id, b"", record_leads(record))
        self._count_delta += 1

    def _move_leads(self, contact_id: bytes, old: bytes, new: bytes) -> None:
        histogram = self._histogram
        if old:
            for entry, counted in index_keys(old, contact_id):
                self.batch.delete(entry)
                histogram[counted] = histogram.get(counted, 0) - 1
        if new:
            for entry, counted in index_keys(new, contact_id):
                self.batch.put(entry, b"")
                histogram[counted] = histogram.get(counted, 0) + 1

    def put_raw(self, key: bytes, value: bytes | None) -> None:
        """A key outside the record layout (metadata): no index, no count."""
        if value is None:
            self.batch.delete(key)
        else:
            self.batch.put(key, value)

    def known(self, key: bytes, previous: bytes | None) -> None:
        """What the database holds for `key` now, read before: `put` need not read it."""
        self._current.setdefault(key, _summary(previous))

    def _stored(self, key: bytes) -> tuple[bool, float | None, bytes]:
        previous: bytes | None = self.db.get(key)
        return _summary(previous)

    def commit(self, changelog_offset: int | None, offset_key: bytes) -> None:
        if self._count_delta:
            raw = self.db.get(_COUNT)
            count = (int(raw) if raw else 0) + self._count_delta
            self.batch.put(_COUNT, str(count).encode())
        for counted, delta in self._histogram.items():
            if delta:
                total = read_count(self.db.get(counted)) + delta
                if total:
                    self.batch.put(counted, pack_count(total))
                else:
                    self.batch.delete(counted)
        if changelog_offset is not None:
            self.batch.put(offset_key, str(changelog_offset).encode())
        self.db.write(self.batch)


class ContactTable(faust.Table[bytes, bytes]):
    """A Faust table whose store is `ContactStore`, so Faust manages it like any table."""

    def _new_store_by_url(self, url: str | URL) -> StoreT[bytes, bytes]:
        return ContactStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )

    @property
    def store(self) -> ContactStore:
        return cast(ContactStore, self.data)
