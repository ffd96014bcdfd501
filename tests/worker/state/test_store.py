"""The contact table's on-disk layout: records, the deadline index, counts, changelog offsets.

No broker, except for the changelog catch-up: Faust's RocksDB store only needs an app
configuration to open its databases.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import faust
import pytest
from faust.types import TP, ProducerT

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.client import KeyedProducer
from streams.kafka.security import KafkaConnection
from streams.worker.flow.timers import Timers, decode_tick
from streams.worker.state.lead_index import Block, digest
from streams.worker.state.states import ContactStates
from streams.worker.state.store import (
    ContactStore,
    ContactTable,
    contact_key,
    meta_key,
    pack_record,
    record_applied,
    record_deadline,
    record_history,
    record_state,
)


def _changelog(partition: int, offset: int, contact: str, record: bytes | None) -> SimpleNamespace:
    message = SimpleNamespace(
        key=contact_key(contact),
        value=record,
        partition=partition,
        offset=offset,
        tp=("changelog", partition),
    )
    return SimpleNamespace(message=message)


def test_a_record_keeps_deadline_and_applied_offsets_before_the_state() -> None:
    assert record_deadline(pack_record(12.5, {0: 7, 3: 1}, b"state")) == 12.5
    assert record_deadline(pack_record(None, {0: 7}, b"state")) is None
    assert record_applied(pack_record(12.5, {5: 2**40, 0: 9}, b"state")) == {5: 2**40, 0: 9}
    assert record_applied(pack_record(12.5, {}, b"state")) == {}
    for applied in ({}, {0: 7}, {0: 7, 11: 2**40}):
        assert record_state(pack_record(12.5, applied, b"state")) == b"state"


def test_a_record_keeps_its_history_between_the_applied_offsets_and_the_state() -> None:
    for applied in ({}, {0: 7}, {0: 7, 11: 2**40}):
        record = pack_record(12.5, applied, b"state", b"history")
        assert record_deadline(record) == 12.5
        assert record_applied(record) == applied
        assert (record_history(record), record_state(record)) == (b"history", b"state")
    with pytest.raises(ValueError, match="at most 16,383"):
        pack_record(None, dict.fromkeys(range(2**14), 0), b"state")


def test_due_reads_only_entries_up_to_the_time_oldest_first(store: ContactStore) -> None:
    store.write(
        0, {"late": pack_record(300.0, {0: 7}, b"1"), "early": pack_record(100.0, {0: 7}, b"2")}
    )
    store.write(
        0, {"never": pack_record(None, {0: 7}, b"3"), "exact": pack_record(200.0, {0: 7}, b"4")}
    )
    store.write(1, {"other-partition": pack_record(50.0, {0: 7}, b"5")})
    assert list(store.due(0, 200.0)) == [(100.0, "early"), (200.0, "exact")]
    assert list(store.due(0, 99.0)) == []
    assert [contact for _, contact in store.due(0, 1e12)] == ["early", "exact", "late"]


def test_a_new_deadline_replaces_the_old_index_entry(store: ContactStore) -> None:
    store.write(0, {"c": pack_record(100.0, {0: 7}, b"1")})
    store.write(0, {"c": pack_record(500.0, {0: 7}, b"2")})
    assert list(store.due(0, 1e12)) == [(500.0, "c")]
    store.write(0, {"c": pack_record(None, {0: 7}, b"3")})
    assert list(store.due(0, 1e12)) == []
    assert store.read(0, "c") == pack_record(None, {0: 7}, b"3")


def test_contacts_are_counted_once(store: ContactStore) -> None:
    store.write(0, {"a": pack_record(None, {0: 7}, b"1"), "b": pack_record(None, {0: 7}, b"1")})
    store.write(0, {"a": pack_record(None, {0: 7}, b"2")})
    assert store.contact_count(0) == 2
    assert store.contact_count(1) == 0


def test_recovery_keeps_index_and_count_right_for_repeated_keys(store: ContactStore) -> None:
    store.write(0, {"a": pack_record(100.0, {0: 7}, b"old")})
    batch = [
        _changelog(0, 7, "a", pack_record(200.0, {0: 7}, b"1")),
        _changelog(0, 8, "a", pack_record(300.0, {0: 7}, b"2")),
        _changelog(0, 9, "b", pack_record(150.0, {0: 7}, b"3")),
        _changelog(1, 4, "c", pack_record(None, {0: 7}, b"4")),
        _changelog(0, 10, "b", None),
        _changelog(1, 11, "d", None),
        _changelog(1, 12, "d", pack_record(None, {0: 7}, b"5")),
        _changelog(1, 13, "", b"stream time"),
    ]
    batch[-1].message.key = meta_key("stream-time")
    store.apply_changelog_batch(batch, None, None)  # type: ignore[arg-type]
    assert list(store.due(0, 1e12)) == [(300.0, "a")]
    assert store.read(0, "a") == pack_record(300.0, {0: 7}, b"2")
    assert store.read(0, "b") is None
    assert (store.contact_count(0), store.contact_count(1)) == (1, 2)
    assert store.persisted_offset(SimpleNamespace(partition=0)) == 10  # type: ignore[arg-type]
    assert store.persisted_offset(SimpleNamespace(partition=1)) == 13  # type: ignore[arg-type]
    assert store.meta(1, "stream-time") == b"stream time"


def _leads(scores: dict[str, int], changed_at: float) -> bytes:
    return Block(changed_at, digest({"scores": scores}), tuple(scores.items())).pack()


def test_a_bulk_catch_up_derives_the_keys_that_record_by_record_recovery_keeps(
    store: ContactStore,
) -> None:
    """Partition 0 recovers record by record, partition 1 as a bulk catch-up into an empty
    database: records alone, then one pass. Both must end with the same keys and values."""
    records: list[tuple[int, bytes, bytes | None]] = []
    for number in range(60):
        contact = f"c{number % 17}"
        deadline = None if number % 5 == 0 else 1000.0 + number
        leads = b"" if number % 7 == 0 else _leads({"lead": number % 9, "fit": 3}, number)
        records.append(
            (number, contact_key(contact), pack_record(deadline, {0: 1}, b"s", b"", leads))
        )
    records += [(60, contact_key("c3"), None), (61, meta_key("stream-time"), b"t")]
    records.append((62, contact_key("c4"), pack_record(5.0, {0: 1}, b"s")))  # its block goes
    store.write(1, {"stale": pack_record(1.0, {0: 1}, b"s", b"", _leads({"lead": 1}, 1.0))})
    store._db(1).delete(contact_key("stale"))  # what a crashed pass leaves: derived keys only
    store._db(1).put(meta_key("underived"), b"")

    for start in range(0, len(records), 25):
        chunk = records[start : start + 25]
        store._apply_changelog([(0, offset, key, value) for offset, key, value in chunk])
        store._apply_changelog(
            [(1, offset, key, value) for offset, key, value in chunk], frozenset({1})
        )
    assert len(list(store.due(1, 1e12))) == 1  # the stale entry: nothing derived yet
    store._derive(1)

    assert dict(store._db(1).items()) == dict(store._db(0).items())
    assert store.meta(1, "underived") is None
    assert store.contact_count(1) == 16
    assert store.score_counts(1, "fit") == [(3, 13)]


def test_write_stores_the_changelog_offset_and_metadata_with_the_records(
    store: ContactStore,
) -> None:
    store.write(1, {"a": pack_record(None, {0: 7}, b"1")}, changelog_offset=41, meta={"k": b"v"})
    assert store.persisted_offset(SimpleNamespace(partition=1)) == 41  # type: ignore[arg-type]
    assert store.meta(1, "k") == b"v"
    assert store.read(1, "a") == pack_record(None, {0: 7}, b"1")


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, int]] = []

    async def send(self, topic: str, key: bytes, value: bytes, **options: object) -> None:
        self.sent.append((topic, key, value, options["partition"]))  # type: ignore[arg-type]


def test_a_due_contact_is_ticked_once_until_its_state_is_persisted(store: ContactStore) -> None:
    store.write(
        0, {"due": pack_record(100.0, {0: 7}, b"1"), "later": pack_record(4e12, {0: 7}, b"2")}
    )
    producer = _Producer()
    states = cast(ContactStates, None)  # the wall clock does not ask for stream time
    timers = Timers("wall", states, lambda: store, lambda: cast(ProducerT, producer), "ticks")

    assert asyncio.run(timers.run_pass([0, 1])) == 1
    topic, key, value, partition = producer.sent[0]
    assert (topic, key, partition) == ("ticks", b"due", 0)
    assert decode_tick(value) > 100.0
    assert asyncio.run(timers.run_pass([0])) == 0  # still in flight

    timers.settled(SimpleNamespace(contacts={0: ["due"]}))  # type: ignore[arg-type]
    assert asyncio.run(timers.run_pass([0])) == 1  # the index still says due: tick again
    timers.done(0, "due")
    timers.forget([0])
    assert asyncio.run(timers.run_pass([0])) == 1


@pytest.mark.integration
def test_catch_up_reads_the_changelog_to_its_end_with_the_offset(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"catch-up-{uuid.uuid4().hex[:8]}-changelog"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2)])
    publisher = KeyedProducer(KafkaConnection(kafka_bootstrap))
    behind = 1_005
    for number in range(behind):
        publisher.produce(
            topic, contact_key(f"c{number % 500}"), pack_record(number, {0: 0}, b"s"), [], 0
        )
    publisher.produce(topic, meta_key("stream-time"), b"t", [], 0)
    publisher.produce(topic, contact_key("few"), pack_record(1.0, {0: 0}, b"s"), [], 1)
    publisher.flush()

    app = faust.App("catch-up-test", broker=f"kafka://{kafka_bootstrap}", datadir=str(tmp_path))
    app.kafka = KafkaConnection(kafka_bootstrap)  # as build_worker sets it
    table = ContactTable(app, name="contacts", partitions=2, key_type=bytes, value_type=bytes)
    try:
        store = table.store
        store.catch_up(topic, [0, 1], lambda: True, time.monotonic() + 60)  # a rebalance
        assert store.persisted_offset(TP(topic, 0)) is None
        store.catch_up(topic, [0, 1], lambda: False, time.monotonic() + 60)
        # Read to the end, offset and all; the records alone, their index after them.
        assert store.persisted_offset(TP(topic, 0)) == behind  # the metadata record's offset
        assert store.contact_count(0) == 500
        assert len(list(store.due(0, 1e12))) == 500
        assert store.meta(0, "underived") is None
        assert store.meta(0, "stream-time") == b"t"
        last = store.read(0, "c499")
        latest = max(number for number in range(behind) if number % 500 == 499)
        assert last is not None and record_deadline(last) == latest
        # However little a partition is behind: Faust's recovery would wait for a trailing
        # transaction marker (tests/worker/runtime/test_fencing.py).
        assert store.persisted_offset(TP(topic, 1)) == 0 and store.read(1, "few") is not None
    finally:
        table.store.close()
