"""Fencing by the group: once another member took a worker's partitions over, the old owner
makes nothing visible for them any more."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP
from faust.types import TP

from streams.backtest.simulate import generate
from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.client import PublishError
from streams.kafka.security import KafkaConnection
from streams.models.events import CONTACT_ERASED, TrackingEvent
from streams.scoring import ContactState, current_score, decode_state, load_plans
from streams.worker.runtime.fencing import (
    FencedError,
    Member,
    Transactions,
    fatal_cause,
    group_metadata,
    transactional_id,
)
from streams.worker.state.store import (
    CONTACT,
    ContactTable,
    contact_key,
    pack_record,
    record_applied,
    record_state,
)
from tests.worker.conftest import StartWorker
from tests.worker.expected import Scores, differences, expected_outcome
from tests.worker.harness import (
    EXAMPLE_PLANS,
    TopicReader,
    WorkerProcess,
    http_get,
    key_on_partition,
    publish,
    wait_until,
)
from tests.worker.test_replay_equivalence import assert_matches_replay, end_events

PLANS = load_plans(EXAMPLE_PLANS)


def test_a_data_directory_keeps_its_transactional_id(tmp_path: Path) -> None:
    """A worker restarted on its directory aborts its predecessor's open transaction at once
    (`init_transactions` with the same id); another directory is another producer."""
    first = transactional_id("t1.leadscore", tmp_path / "a")
    assert first.startswith("t1.leadscore-")
    assert transactional_id("t1.leadscore", tmp_path / "a") == first
    assert transactional_id("t1.leadscore", tmp_path / "b") != first


@pytest.mark.parametrize("instance", [None, "worker-1"])
def test_the_group_metadata_is_written_as_librdkafka_writes_it(instance: str | None) -> None:
    """`send_offsets_to_transaction` reads these bytes with librdkafka's own parser: the
    same bytes as a librdkafka consumer's (before it joins, generation -1 and no member id)
    prove the format. If this fails after an upgrade of confluent-kafka, librdkafka changed its
    serialisation (`rd_kafka_consumer_group_metadata_write`): adapt `group_metadata`."""
    config = {"bootstrap.servers": "127.0.0.1:9", "group.id": "g.leadscore"}
    if instance is not None:
        config["group.instance.id"] = instance
    consumer = Consumer(config)
    try:
        theirs = consumer.consumer_group_metadata()
    finally:
        consumer.close()
    assert group_metadata(Member("g.leadscore", -1, "", instance)) == theirs


def test_a_fenced_producer_is_told_from_other_errors() -> None:
    fenced = KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    assert fatal_cause(fenced) is not None
    # confluent-kafka raises a fatal error from poll/flush as the cause of a SystemError.
    wrapped = SystemError("append returned a result with an exception set")
    wrapped.__cause__ = fenced
    assert fatal_cause(wrapped) is not None
    # And every produce after that fails with this one, which is not flagged fatal itself.
    assert fatal_cause(KafkaException(KafkaError(KafkaError._FATAL, "fatal error"))) is not None
    assert fatal_cause(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "slow"))) is None
    assert fatal_cause(SystemError("unrelated")) is None


def _no_member() -> Member:
    raise AssertionError("nothing is claimed here")


def test_nothing_is_sent_before_partitions_are_claimed(tmp_path: Path) -> None:
    transactions = Transactions(KafkaConnection("127.0.0.1:9"), dict, "app", tmp_path, _no_member)

    async def scenario() -> None:
        with pytest.raises(FencedError, match="no partitions claimed"):
            await transactions.send("topic", b"k", b"v", [], 0)

    asyncio.run(scenario())  # nothing connects: the producer is built by the first claim


def _transactions(bootstrap: str, app_id: str, data_dir: Path, member: Any) -> Transactions:
    return Transactions(
        KafkaConnection(bootstrap), lambda: {"message.timeout.ms": 3000}, app_id, data_dir, member
    )


@pytest.mark.integration
def test_a_commit_waits_for_every_message_and_fails_with_the_refused_ones_reasons(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The commit is the persist's barrier: it returns once everything sent in the
    transaction is acknowledged (the offsets are known then), and a refused message makes it
    raise, so the states of that interval are never written."""
    app_id = f"commit-{uuid.uuid4().hex[:8]}"
    topic = f"{app_id}-out"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 1)])

    async def scenario() -> None:
        outside = Member(app_id, -1, "")  # no group generation checked: a group of its own
        transactions = _transactions(kafka_bootstrap, app_id, tmp_path, lambda: outside)
        await transactions.claim([], topic, {0})
        for number in range(20):
            await transactions.send(topic, b"k", str(number).encode(), [], 0)
        await transactions.commit({})
        assert transactions.acknowledged == {(topic, 0): 19}
        await transactions.send(topic, b"k", b"kept?", [], 0)
        await transactions.send(f"{app_id}-missing", b"k", b"refused", [], 0)
        with pytest.raises(PublishError, match="1 message"):
            await transactions.commit({})
        transactions.close()

    asyncio.run(scenario())
    values = [m.value() for m in TopicReader(kafka_bootstrap, topic).catch_up()]
    assert values == [str(number).encode() for number in range(20)]  # the second was aborted


async def _member(bootstrap: str, group: str, topic: str) -> AIOKafkaConsumer:
    """A member of `group` that owns partitions of `topic` (as Faust's consumer is)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
    return consumer


def _committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset of partition 0 of `topic`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (position,) = consumer.committed([KafkaTP(topic, 0)], timeout=30)
    finally:
        consumer.close()
    return int(position.offset)


def _membership(consumer: AIOKafkaConsumer) -> Member:
    coordinator = consumer._coordinator
    return Member(coordinator.group_id, coordinator.generation, coordinator.member_id)


def _fencing_topics(bootstrap: str) -> tuple[str, str, str]:
    """A fresh app id, its changelog (one partition, compacted) and its input (two)."""
    app_id = f"fence-{uuid.uuid4().hex[:8]}"
    topic, source = f"{app_id}-changelog", f"{app_id}-events"
    ensure_topics(
        bootstrap,
        [TopicSpec(topic, 1, config={"cleanup.policy": "compact"}), TopicSpec(source, 2)],
    )
    return app_id, topic, source


async def _joined(
    bootstrap: str, app_id: str, source: str, first: AIOKafkaConsumer
) -> AIOKafkaConsumer:
    """A second member of the group, once the first has rejoined too: the generation in
    which the first claimed its partitions is over."""
    second = await _member(bootstrap, app_id, source)
    while _membership(second).generation != _membership(first).generation:
        await first.getmany(timeout_ms=200)
    return second


@pytest.mark.integration
def test_a_member_of_an_old_generation_is_refused_and_recovery_skips_what_it_left(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """Fencing by the group: a worker whose generation is over (another member joined while
    it was frozen mid-transaction) is refused when its offsets join the transaction; the
    transaction is aborted, so `read_committed` readers and recovery never see its records,
    while the new owner's commit, under the new generation, goes through."""
    app_id, topic, source = _fencing_topics(kafka_bootstrap)

    async def scenario() -> None:
        first = await _member(kafka_bootstrap, app_id, source)
        old = _transactions(kafka_bootstrap, app_id, tmp_path / "old", lambda: _membership(first))
        await old.claim([source], topic, {0})
        await old.send(topic, contact_key("a"), pack_record(None, {0: 1}, b"old"), [], 0)
        await old.commit({(source, 0): 1})
        # Frozen mid-transaction: sent, not committed, when another member joins.
        await old.send(topic, contact_key("a"), pack_record(None, {0: 2}, b"zombie"), [], 0)
        await old.barrier()
        second = await _joined(kafka_bootstrap, app_id, source, first)
        with pytest.raises(FencedError, match="ILLEGAL_GENERATION"):
            await old.commit({(source, 0): 2})  # under the generation it claimed in
        # The new owner's claim waits while the old transaction is open; it was aborted.
        new = _transactions(kafka_bootstrap, app_id, tmp_path / "new", lambda: _membership(second))
        await new.claim([source], topic, {0})
        await new.send(topic, contact_key("a"), pack_record(None, {0: 3}, b"new"), [], 0)
        await new.commit({(source, 0): 3})
        old.close()
        new.close()
        await first.stop()
        await second.stop()

    asyncio.run(scenario())
    values = [m.value() for m in TopicReader(kafka_bootstrap, topic).catch_up()]
    assert [record_state(v) for v in values] == [b"old", b"new"]  # the open one was aborted
    assert _committed(kafka_bootstrap, app_id, source) == 3

    app = faust.App(app_id, broker=f"kafka://{kafka_bootstrap}", datadir=str(tmp_path))
    app.kafka = KafkaConnection(kafka_bootstrap)  # what the catch-up reader connects with
    table = ContactTable(app, name="contacts", partitions=1, key_type=bytes, value_type=bytes)
    try:
        store = table.store
        store.catch_up(topic, [0], lambda: False, time.monotonic() + 60)
        record = store.read(0, "a")
        assert record is not None and record_state(record) == b"new"
        # old, marker, zombie, abort marker, new, marker: the offset covers the last marker,
        # so Faust's recovery finds nothing left to wait for.
        assert store.persisted_offset(TP(topic, 0)) == 5
    finally:
        store.close()


@pytest.mark.integration
def test_a_commit_without_offsets_of_its_own_is_fenced_by_the_group_too(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """The persist before partitions are revoked carries no offsets, and a zombie runs one
    as it wakes: its transaction sends the last committed offsets again, so the coordinator
    refuses it like any other commit of an old generation, and its records are aborted."""
    app_id, topic, source = _fencing_topics(kafka_bootstrap)

    async def scenario() -> None:
        first = await _member(kafka_bootstrap, app_id, source)
        old = _transactions(kafka_bootstrap, app_id, tmp_path / "old", lambda: _membership(first))
        await old.claim([source], topic, {0})  # nothing committed yet: offset 0 stands in
        await old.send(topic, contact_key("a"), pack_record(None, {0: 1}, b"zombie"), [], 0)
        second = await _joined(kafka_bootstrap, app_id, source, first)
        with pytest.raises(FencedError, match="ILLEGAL_GENERATION"):
            await old.commit({})
        old.close()
        await first.stop()
        await second.stop()

    asyncio.run(scenario())
    assert list(TopicReader(kafka_bootstrap, topic).catch_up()) == []


SESSION_TIMEOUT = ("--session-timeout", "6")
EVENTS = 16_000
CONTACTS = 300
PARTITIONS = 2


def _stream(zombie_partition: int) -> tuple[list[TrackingEvent], int, int, str]:
    """Simulated events with a contact of the zombie's partition active all along, erased at
    the start of the third phase; the phase boundaries; the erased contact's id."""
    erased = key_on_partition(zombie_partition, PARTITIONS, "erased")
    simulated = list(generate(CONTACTS, EVENTS, seed=31))
    events: list[TrackingEvent] = []
    for number, item in enumerate(simulated):
        if number % 40 == 0 and number < EVENTS * 4 // 5:
            events.append(
                TrackingEvent(
                    id=f"erased-{number}",
                    source="/test",
                    type="email.clicked",  # no limit: every one changes the state
                    time=item.time,
                    subject=erased,
                    data={"url": "https://example.com/offer"},
                )
            )
        events.append(item)
    second = len(events) // 5
    third = max(i for i, e in enumerate(events) if e.contact_id == erased) + 1
    erase = TrackingEvent(
        id="erase", source="/test", type=CONTACT_ERASED, time=events[third].time, subject=erased
    )
    ends = end_events(events[-1].time, PARTITIONS)
    return [*events[:third], erase, *events[third:], *ends], second, third, erased


def _partitions(worker: WorkerProcess) -> list[int] | None:
    status, body = http_get(worker.url + "/readyz")
    return body.get("partitions") if status == 200 and isinstance(body, dict) else None


def _caught_up(worker: WorkerProcess, partitions: int) -> bool:
    lags = {k: v for k, v in worker.metrics().items() if k.startswith("leadscore_consumer_lag{")}
    consumed = (worker.topics.events, worker.topics.ticks, worker.topics.rerouted)
    return len(lags) == len(consumed) * partitions and not any(lags.values())


def _stale_records(bootstrap: str, topic: str) -> list[str]:
    """Changelog records whose applied offset (per input partition) is below an earlier
    record's for the same key:
    a state older than one already written, from a worker that was no longer the owner."""
    latest: dict[tuple[bytes, int], int] = {}
    stale = []
    for message in TopicReader(bootstrap, topic).catch_up():
        key, value = message.key(), message.value()
        if not key.startswith(CONTACT) or value is None:
            continue
        for partition, offset in record_applied(value).items():
            before = latest.get((key, partition), -1)
            if offset < before:
                stale.append(f"{key.decode()}: applied {partition}@{offset} after {before}")
            latest[(key, partition)] = max(offset, before)
    return stale


def _last_states(bootstrap: str, topic: str) -> dict[str, ContactState]:
    """What the next recovery restores: the last record of every contact, decoded."""
    last = {}
    for message in TopicReader(bootstrap, topic).catch_up():
        key = message.key()
        if key.startswith(CONTACT):
            last[key[len(CONTACT) :].decode()] = decode_state(record_state(message.value()))
    return last


def _restored_scores(bootstrap: str, topic: str) -> Scores:
    return {
        (contact, plan.name): current_score(plan, state)
        for contact, state in _last_states(bootstrap, topic).items()
        for plan in PLANS
    }


@pytest.mark.integration
def test_a_worker_frozen_past_its_session_cannot_write_after_the_takeover(
    start_worker: StartWorker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    first = start_worker(name="zombie", partitions=PARTITIONS, extra_args=SESSION_TIMEOUT)
    prefix = first.prefix
    owner = start_worker(
        name="owner", prefix=prefix, partitions=PARTITIONS, extra_args=SESSION_TIMEOUT
    )
    wait_until(
        lambda: _partitions(first) and _partitions(owner),
        90,
        "the partitions to be split between the two workers",
    )
    zombie_partition = (_partitions(first) or [])[0]
    events, second, third, erased = _stream(zombie_partition)
    changelog = f"{prefix}leadscore-contacts-changelog"

    publish(kafka_bootstrap, first.topics.events, events[:second])
    wait_until(
        lambda: first.consumed() + owner.consumed() == second, 60, "the first phase consumed"
    )
    done = first.consumed()
    publish(kafka_bootstrap, first.topics.events, events[second:third])
    wait_until(lambda: first.consumed() >= done + 300, 60, "the zombie busy with phase two", 0.05)
    assert first.process is not None
    first.process.send_signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: _partitions(owner) == list(range(PARTITIONS)),
            90,
            "the owner to take the frozen worker's partition over",
        )
        publish(kafka_bootstrap, first.topics.events, events[third:])
        wait_until(
            lambda: owner.contact(erased)[0] == 404 and _caught_up(owner, PARTITIONS),
            90,
            "the owner to process everything, the erasure included",
        )
    finally:
        first.process.send_signal(signal.SIGCONT)

    # Thawed, the zombie scores what it had fetched and persists: fenced, it must stop
    # without writing (and is restarted, as an orchestrator would); unfenced, it rejoins.
    def settled() -> bool:
        if first.process is not None and first.process.poll() is not None:
            return True
        parts = (_partitions(first), _partitions(owner))
        return all(parts) and len(parts[1] or []) < PARTITIONS

    wait_until(settled, 90, "the thawed worker to stop or rejoin")
    stale = _stale_records(kafka_bootstrap, changelog)
    assert not stale, f"{len(stale)} stale changelog records, e.g. {stale[:5]}"
    if first.process.poll() is not None:
        assert first.process.returncode != 0
        assert "fenced" in first.log(400)
        first.start()
        wait_until(
            lambda: _partitions(first) and _partitions(owner),
            90,
            "the restarted worker to take a partition again",
        )

    assert _last_states(kafka_bootstrap, changelog)[erased].erased_at is not None, (
        "the erased contact came back"
    )
    for worker in (first, owner):
        assert worker.contact(erased)[0] == 404
        assert_matches_replay(worker, kafka_bootstrap, events, PLANS)
    # What the next recovery restores is right too, once the last ticks are persisted.
    expected, _ = expected_outcome(events, PLANS)
    wait_until(
        lambda: not differences(expected, _restored_scores(kafka_bootstrap, changelog)),
        60,
        "the changelog's last records to hold the replay's scores",
        1.0,
    )
