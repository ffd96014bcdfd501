"""The write-back cache between the processor and RocksDB, without Kafka: what `persist` writes,
and the decoded states it keeps for the next event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import faust
import pytest

from streams.kafka.client import Headers, KeyedProducer
from streams.scoring import ContactState, load_plans, score_event
from streams.worker.states import ContactStates, Held
from streams.worker.store import ContactStore, ContactTable, record_applied_offset
from tests.support import event
from tests.worker.harness import EXAMPLE_PLANS

PLANS = load_plans(EXAMPLE_PLANS)


class _Changelog:
    """Takes what `persist` sends, acknowledging each at the next offset of its partition."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.acknowledged: dict[tuple[str, int], int] = {}

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int
    ) -> None:
        assert key is not None
        self.sent.append((partition, key))
        where = (topic, partition)
        self.acknowledged[where] = self.acknowledged.get(where, -1) + 1

    async def wait_delivered(self) -> None:
        """Everything is acknowledged as it is sent."""

    def check(self) -> None:
        """Nothing is ever refused."""


@pytest.fixture
def table(tmp_path: Path) -> Iterator[ContactTable]:
    app = faust.App("states-test", store="rocksdb://", datadir=str(tmp_path))
    table = ContactTable(app, name="contacts", partitions=2, key_type=bytes, value_type=bytes)
    yield table
    table.store.close()


def _states(table: ContactTable, changelog: _Changelog, cache_size: int) -> ContactStates:
    async def no_outputs() -> None:
        """The tests send no outputs."""

    producer = cast(KeyedProducer, changelog)
    return ContactStates(
        lambda: table.store, lambda: producer, "changelog", PLANS, no_outputs, cache_size
    )


def _opened(contact: str, minute: int) -> ContactState:
    return score_event(None, event("email.opened", minute * 60, contact=contact), PLANS).state


class _CountingReads:
    """Counts the store's record reads, to tell a cache hit from a miss."""

    def __init__(self, store: ContactStore) -> None:
        self.reads = 0
        original = store.read

        def read(partition: int, contact_id: str) -> bytes | None:
            self.reads += 1
            return original(partition, contact_id)

        store.read = read  # type: ignore[method-assign]


def test_persist_writes_each_state_once_with_its_applied_offset(table: ContactTable) -> None:
    changelog = _Changelog()
    states = _states(table, changelog, cache_size=0)
    states.put(0, "a", Held(_opened("a", 0), 5))
    states.put(0, "a", Held(_opened("a", 1), 6))  # the same contact again: one write
    states.put(1, "b", Held(_opened("b", 0), 3))
    persisted = asyncio.run(states.persist())

    assert persisted.contacts == {0: ["a"], 1: ["b"]}
    assert sorted(changelog.sent) == [(0, b"ca"), (1, b"cb")]
    record = table.store.read(0, "a")
    assert record is not None and record_applied_offset(record) == 6


def test_a_persisted_state_is_served_from_the_cache_until_taken(table: ContactTable) -> None:
    states = _states(table, _Changelog(), cache_size=10)
    reads = _CountingReads(table.store)
    states.put(0, "a", Held(_opened("a", 0), 5))
    asyncio.run(states.persist())

    held = states.get(0, "a")
    assert held is not None and held.applied_offset == 5 and reads.reads == 0
    # Taken out: the caller may change it in place, so the next look-up reads the store.
    again = states.get(0, "a")
    assert again is not None and again is not held and reads.reads == 1
    assert again.state == held.state


def test_the_cache_keeps_the_most_recently_persisted_states(table: ContactTable) -> None:
    states = _states(table, _Changelog(), cache_size=2)
    reads = _CountingReads(table.store)
    for number, contact in enumerate(["a", "b", "c"]):
        states.put(0, contact, Held(_opened(contact, number), number))
        asyncio.run(states.persist())

    assert states.get(0, "b") is not None and states.get(0, "c") is not None
    assert reads.reads == 0
    assert states.get(0, "a") is not None and reads.reads == 1


def test_forgotten_partitions_leave_the_cache(table: ContactTable) -> None:
    states = _states(table, _Changelog(), cache_size=10)
    reads = _CountingReads(table.store)
    states.put(0, "kept", Held(_opened("kept", 0), 1))
    states.put(1, "moved", Held(_opened("moved", 0), 1))
    asyncio.run(states.persist())
    states.forget({1})

    assert states.get(0, "kept") is not None and reads.reads == 0
    assert states.get(1, "moved") is not None and reads.reads == 1
