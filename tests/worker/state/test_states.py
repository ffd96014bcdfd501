"""The write-back cache between the processor and RocksDB, without Kafka: what `persist` writes
and what `get` reads back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import faust
import pytest
from prometheus_client import CollectorRegistry

from streams.kafka.client import Headers
from streams.models.plan_versions import PlanHistory
from streams.scoring import ContactState, load_plans, score_event
from streams.worker.plans.live import LivePlans
from streams.worker.runtime.fencing import Transactions
from streams.worker.state.history import EMPTY
from streams.worker.state.states import ContactStates, Held
from streams.worker.state.store import ContactTable, record_applied
from tests.support import event
from tests.worker.harness import EXAMPLE_PLANS

PLANS = load_plans(EXAMPLE_PLANS)


class _Changelog:
    """Takes what `persist` sends, acknowledging each at the next offset of its partition;
    one producer for every partition."""

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

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Everything is acknowledged and committed as it is sent."""


@pytest.fixture
def table(tmp_path: Path) -> Iterator[ContactTable]:
    app = faust.App("states-test", store="rocksdb://", datadir=str(tmp_path))
    table = ContactTable(app, name="contacts", partitions=2, key_type=bytes, value_type=bytes)
    yield table
    table.store.close()


def _states(table: ContactTable, changelog: _Changelog) -> ContactStates:
    async def no_outputs() -> None:
        """The tests send no outputs."""

    producers = cast(Transactions, changelog)
    live = LivePlans(PlanHistory.single(PLANS), CollectorRegistry(), time.time)
    return ContactStates(lambda: table.store, producers, "changelog", live, no_outputs)


def _opened(contact: str, minute: int) -> ContactState:
    return score_event(None, event("email.opened", minute * 60, contact=contact), PLANS).state


def test_persist_writes_each_state_once_with_its_applied_offset(table: ContactTable) -> None:
    changelog = _Changelog()
    states = _states(table, changelog)
    states.put(0, "a", Held(_opened("a", 0), {0: 5}))
    states.put(0, "a", Held(_opened("a", 1), {0: 6, 3: 2}))  # the same contact again: one write
    states.put(1, "b", Held(_opened("b", 0), {1: 3}))
    persisted = asyncio.run(states.persist())

    assert persisted.contacts == {0: ["a"], 1: ["b"]}
    assert sorted(changelog.sent) == [(0, b"ca"), (1, b"cb")]
    record = table.store.read(0, "a")
    assert record is not None and record_applied(record) == {0: 6, 3: 2}


def test_a_persisted_state_is_read_back_from_the_store_as_a_new_object(
    table: ContactTable,
) -> None:
    states = _states(table, _Changelog())
    written = _opened("a", 0)
    states.put(0, "a", Held(written, {0: 5}))
    asyncio.run(states.persist())

    held = states.get(0, "a")
    # Not the object written: the caller may change it in place without touching the store.
    assert held is not None and held.state is not written and held.applied == {0: 5}
    assert held.state == written


def test_a_contact_s_history_is_persisted_and_read_back_with_its_state(
    table: ContactTable,
) -> None:
    states = _states(table, _Changelog())
    step = score_event(None, event("email.opened", 0, contact="a"), PLANS)
    history = EMPTY.recorded(step.outputs, 20, PLANS.active_names)
    states.put(0, "a", Held(step.state, {0: 5}, history))
    asyncio.run(states.persist())

    assert Held(step.state, {0: 5}, history).after(step.state, (0, 6)).history is history
    held = states.get(0, "a")
    assert held is not None and held.history is not history
    assert held.history.changes("lead-score", 20) == history.changes("lead-score", 20)
    assert [change["score"] for change in held.history.changes("lead-score", 20)] == [10]


def test_a_contact_id_never_matches_a_state_of_another_partition(table: ContactTable) -> None:
    """A producer that partitioned by another hash once put contact `a` on partition 1 as
    well; whatever is held for `a` there, written or persisted, is never `a` on partition 0."""
    changelog = _Changelog()
    states = _states(table, changelog)
    on_0, on_1 = _opened("a", 0), _opened("a", 1)
    states.put(1, "a", Held(on_1, {1: 9}))
    assert states.get(0, "a") is None
    states.put(0, "a", Held(on_0, {0: 4}))
    persisted = asyncio.run(states.persist())

    assert persisted.contacts == {0: ["a"], 1: ["a"]}
    assert sorted(changelog.sent) == [(0, b"ca"), (1, b"ca")]
    for partition, written, applied in ((0, on_0, {0: 4}), (1, on_1, {1: 9})):
        held = states.get(partition, "a")
        assert held is not None and (held.state, held.applied) == (written, applied)


def test_contact_ids_are_those_of_the_partition_durable_or_written_since(
    table: ContactTable,
) -> None:
    states = _states(table, _Changelog())
    states.put(0, "durable", Held(_opened("durable", 0)))
    states.put(1, "elsewhere", Held(_opened("elsewhere", 0)))
    asyncio.run(states.persist())
    states.put(0, "new", Held(_opened("new", 1)))
    states.put(0, "durable", Held(_opened("durable", 2)))
    table.store.write(0, {}, meta={"stream-time": b"\0" * 8})  # not a contact

    assert states.contact_ids(0) == {"durable", "new"}
    assert states.contact_ids(1) == {"elsewhere"}
