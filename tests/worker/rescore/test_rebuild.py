"""Rebuilding a partition from the retained log for a `change: rescore` version, against the
real broker.

A worker scores a stream with the old plans: events from a murmur2 producer and from a
librdkafka-default one (whose events the worker re-routes), a duplicate, a bad message and an
erasure. Its changelog gives the old records. Each partition is then rebuilt with the new
version and swapped into contact states holding those records; the result must equal a plain
replay of the partition's events under the new plans, the outputs must be exactly the
threshold membership differences, the rebuilt origins must be the worker's own, and every
message consumed again afterwards must be a duplicate for the live processor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import faust
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from faust.types import ProducerT
from faust.types.tuples import Message
from prometheus_client import CollectorRegistry

from streams.backtest.replay import replay
from streams.backtest.simulate import generate
from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.client import EventPublisher
from streams.kafka.partitioning import partition_for
from streams.kafka.security import KafkaConnection
from streams.models.events import TrackingEvent
from streams.models.outputs import SCORE_CHANGED, THRESHOLD_CROSSED, THRESHOLD_DROPPED
from streams.models.plan_versions import PlanHistory, PlanVersion, parse_plan_version
from streams.scoring import (
    ContactState,
    Output,
    PlanSet,
    advance,
    current_score,
    decode_state,
    encode_state,
    load_plans,
)
from streams.scoring.state import SEEN_LIMIT, copy_state
from streams.worker.flow.outbox import Outbox
from streams.worker.flow.processor import Processor
from streams.worker.flow.reroute import Rerouter
from streams.worker.flow.timers import Timers
from streams.worker.plans.live import LivePlans
from streams.worker.rescore import rebuild as rebuild_module
from streams.worker.rescore.rebuild import HistorySource, Rebuilt, rebuild_partition
from streams.worker.runtime.fencing import Transactions
from streams.worker.settings import TopicNames
from streams.worker.state.states import ContactStates, Held
from streams.worker.state.store import (
    ContactStore,
    ContactTable,
    pack_record,
    record_applied,
    record_state,
)
from streams.worker.web.metrics import Metrics
from tests.kafka.raw_records import RawName, send_batches
from tests.support import BOOM, T0, event, failing_score_event
from tests.worker.flow.test_reroute import publish_with_default_partitioner
from tests.worker.harness import (
    EXAMPLE_PLANS,
    WorkerProcess,
    new_prefix,
    parse_metrics,
    publish,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
CONTACTS = 90
EVENTS = 1500
SLICES = 4
UNREADABLE = b'{"header-name": "not UTF-8"}'
OLD_PLANS = load_plans(EXAMPLE_PLANS)
NEW_VERSION = """
version: v2-rescore
change: rescore
plans:
  - name: lead-score
    thresholds: [{name: warm, score: 60}, {name: hot, score: 200}]
    rules:
      - {id: opened,  when: {type: email.opened},  points: 25, limit: {count: 5, per: 1d}}
      - {id: clicked, when: {type: email.clicked}, points: 20}
      - {id: replied, when: {type: email.replied}, points: 30}
      - {id: pricing, when: {type: page.visited, data: {url: {glob: "*/pricing*"}}}, points: 40, expires: 30d}
      - {id: unsubscribed, when: {type: list.unsubscribed}, reset: true}
    inactivity:
      - {id: went-quiet, after: 20d, reset: true}
  - name: icp-fit
    thresholds: [{name: sales-ready, score: 12}]
    attributes:
      - {id: president, attribute: job_title, in: [president, prezes], points: 10}
      - {id: city, attribute: city, equals: Kraków, points: 6}
      - {id: consent, attribute: consent_email, equals: true, points: 4}
"""


class _Outbox:
    """What the swap and the processor send, kept; a test where anything else is sent fails."""

    def __init__(self) -> None:
        self.sent: list[Output] = []

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        self.sent.extend(outputs)


@dataclass
class History:
    """A stream the worker scored with the old plans, and what it left in its changelog."""

    topics: TopicNames
    source: HistorySource
    events: list[TrackingEvent]
    """The valid events, in time order (no duplicate, no bad message)."""
    old: dict[int, dict[str, Held]]
    """The worker's records per partition, from its changelog."""
    ends: dict[int, dict[str, int]]
    end_time: float


def _owner(contact_id: str) -> int:
    return partition_for(contact_id.encode(), PARTITIONS)


def _read_all(bootstrap: str, topic: str, partition: int) -> list[Any]:
    """Every committed record of one partition, up to its end now."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-rebuild", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    records: list[Any] = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, f"no end of {topic}[{partition}]"
            if message.error():
                return records
            records.append(message)
    finally:
        consumer.close()


def _changelog(bootstrap: str, topic: str, partition: int) -> dict[str, Held]:
    last: dict[str, Held] = {}
    for message in _read_all(bootstrap, topic, partition):
        key: bytes = message.key()
        if key.startswith(b"c"):
            value: bytes = message.value()
            last[key[1:].decode()] = Held(decode_state(record_state(value)), record_applied(value))
    return last


@pytest.fixture(scope="module")
def history(shared_worker: WorkerProcess, kafka_bootstrap: str) -> History:
    return _score_with_worker(shared_worker, kafka_bootstrap)


def _score_with_worker(worker: WorkerProcess, bootstrap: str) -> History:
    events = list(generate(CONTACTS, EVENTS, seed=5))
    contacts = sorted({e.contact_id for e in events})
    # Three kinds of contacts: all their events mis-keyed, every other one, none.
    crc32 = {c for i, c in enumerate(contacts) if i % 3 == 0}
    mixed = {c for i, c in enumerate(contacts) if i % 3 == 1}
    erased = next(c for i, c in enumerate(contacts) if i % 3 == 2)
    # More events than the core remembers ids of: only the origins make its oldest ones
    # duplicates when they are consumed again.
    busy = next(c for i, c in enumerate(contacts) if i % 3 == 2 and c != erased)
    start, step = events[0].time, (events[-1].time - events[0].time) / (2 * SEEN_LIMIT)
    events += [
        TrackingEvent(f"busy-{n}", "/test", "email.clicked", round(start + n * step) + 0.5, busy)
        for n in range(2 * SEEN_LIMIT)
    ]
    events.sort(key=lambda e: e.time)
    end_time = events[-1].time + 1
    events.append(TrackingEvent("erase-1", "/test", "contact.erased", end_time, erased))
    topic = worker.topics.events
    size = -(-len(events) // SLICES)
    with EventPublisher(bootstrap, topic) as publisher:
        # Time slices, each delivered before the next is sent, so that the partition holds
        # each contact's events in time order whichever producer sent them (both may put a
        # contact on the same partition).
        for start in range(0, len(events), size):
            chunk = events[start : start + size]
            odd = start // size % 2 == 1
            wrong = {e.contact_id for e in chunk} & (crc32 | (mixed if odd else set()))
            publish_with_default_partitioner(
                bootstrap, topic, [e for e in chunk if e.contact_id in wrong]
            )
            for event in chunk:
                if event.contact_id not in wrong:
                    publisher.publish(event)
            publisher.flush()
        duplicate = next(e for e in events if e.contact_id not in crc32 | mixed | {erased, busy})
        publisher.publish(duplicate)  # consumed again much later: the core's duplicate
        key = duplicate.contact_id.encode()
        publisher.publish_raw(key, b"{not json", [("x", None)])  # dead-lettered
    # Dead-lettered too, and unreadable for confluent-kafka's `headers()`: a rebuild skips it.
    raw = [(key, UNREADABLE, [(RawName(b"x-\xff"), None), ("ce_specversion", b"1.0")])]
    asyncio.run(send_batches(bootstrap, topic, [(partition_for(key, PARTITIONS), raw)]))
    total = len(events) + 3
    wait_until(lambda: worker.consumed() >= total, 120, f"{total} messages to be consumed")
    assert worker.consumed("dead_lettered") == 2 and worker.consumed("duplicate") == 1
    assert worker.metrics().get("leadscore_events_rerouted_total", 0) > len(events) // 4
    assert worker.stop() == 0, worker.log()  # the final commit writes the changelog
    topics = worker.topics
    changelog = f"{worker.prefix}leadscore-contacts-changelog"
    old = {p: _changelog(bootstrap, changelog, p) for p in range(PARTITIONS)}
    ends = {
        p: {t: _watermarks(bootstrap, t, p)[1] for t in (topics.events, topics.rerouted)}
        for p in range(PARTITIONS)
    }
    source = HistorySource(
        KafkaConnection(bootstrap), topics.events, topics.rerouted, PARTITIONS, "rebuild-test"
    )
    return History(topics, source, events, old, ends, end_time)


def _watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-rebuild"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


@pytest.fixture
def table(tmp_path: Path) -> Iterator[ContactTable]:
    app = faust.App("rebuild-test", store="rocksdb://", datadir=str(tmp_path))
    table = ContactTable(
        app, name="contacts", partitions=PARTITIONS, key_type=bytes, value_type=bytes
    )
    yield table
    table.store.close()


def _contact_states(store: ContactStore, old: dict[int, dict[str, Held]]) -> ContactStates:
    """Contact states whose store holds the old records, as a worker's after recovery."""
    for partition, records in old.items():
        store.write(
            partition,
            {
                contact_id: pack_record(None, held.applied, encode_state(held.state))
                for contact_id, held in records.items()
            },
        )

    async def no_barrier() -> None:
        raise AssertionError("nothing persists in these tests")

    live = LivePlans(PlanHistory.single(OLD_PLANS), CollectorRegistry(), time.time)
    return ContactStates(lambda: store, cast(Transactions, None), "changelog", live, no_barrier)


def _reported(plans: PlanSet, state: ContactState | None) -> dict[str, tuple[int, set[str]]]:
    """Per plan, the score its readers last saw and the thresholds it was at or above."""
    result = {}
    for plan in plans:
        plan_state = None if state is None else state.plans.get(plan.name)
        if plan_state is not None:
            score = plan_state.score
        else:
            score = 0 if state is None else current_score(plan, state)
        result[plan.name] = (score, {t.name for t in plan.thresholds if score >= t.score})
    return result


def _expected_outputs(
    old: ContactState | None, new: ContactState, version: PlanVersion
) -> set[tuple[str, str, str]]:
    """(type, plan, threshold or score) of what a contact's readers must be told."""
    before, after = _reported(OLD_PLANS, old), _reported(version.plans, new)
    expected = set()
    for plan, (score, reached) in after.items():
        was, had = before.get(plan, (0, set()))
        if score != was:
            expected.add((SCORE_CHANGED, plan, str(score)))
        expected |= {(THRESHOLD_CROSSED, plan, t) for t in reached - had}
        expected |= {(THRESHOLD_DROPPED, plan, t) for t in had - reached}
    return expected


def _told(output: Output) -> tuple[str, str, str]:
    data = output.data
    if output.type == SCORE_CHANGED:
        return output.type, data["plan"], str(data["score"])
    return output.type, data["plan"], data["threshold"]


def _same(state: ContactState) -> ContactState:
    """A state without the version label (a replay with one plan set sets none). `rescore`
    gives an erased contact's tombstone empty plan states, at score 0, where the replay's has
    none (the core's, reported; it changes no score): compared without them."""
    tombstone = state.erased_at is not None and state.first_seen is None
    return replace(state, plan_version=None, plans={} if tombstone else state.plans)


def test_a_rebuilt_partition_equals_a_replay_and_tells_exactly_the_threshold_changes(
    history: History, table: ContactTable
) -> None:
    version = parse_plan_version(NEW_VERSION).installed_at(history.end_time)
    states = _contact_states(table.store, history.old)
    metrics = Metrics()
    outbox = _Outbox()
    for partition in range(PARTITIONS):
        mine = [e for e in history.events if _owner(e.contact_id) == partition]
        expected = replay(mine, version.plans, until=history.end_time).states
        rebuilt = asyncio.run(
            rebuild_partition(history.source, partition, history.ends[partition], version, metrics)
        )
        assert rebuilt.states.keys() == expected.keys() == history.old[partition].keys()
        # The same events skipped and applied as the live path did, whatever the plans.
        for contact_id, held in rebuilt.states.items():
            assert held.applied == history.old[partition][contact_id].applied, contact_id
        sent_before = len(outbox.sent)
        swap = asyncio.run(rebuilt.swap(states, cast(Outbox, outbox), OLD_PLANS, history.end_time))
        sent = outbox.sent[sent_before:]
        assert swap.contacts == len(expected) and swap.outputs == len(sent)
        for contact_id, state in expected.items():
            now = states.get(partition, contact_id)
            assert now is not None and _same(now.state) == state, contact_id
            assert now.state.plan_version == "v2-rescore"
            told = [_told(o) for o in sent if o.contact_id == contact_id]
            assert len(told) == len(set(told)), f"{contact_id}: an output twice"
            old = history.old[partition][contact_id].state
            assert set(told) == _expected_outputs(old, state, version), contact_id
        assert all(o.data["cause"] == {"plan_change": "v2-rescore", "rescore": True} for o in sent)
    alerts = [o for o in outbox.sent if o.kind == "alert"]
    assert alerts and any(o.type == THRESHOLD_DROPPED for o in alerts), "a weak test"
    exposed = parse_metrics(metrics.exposition().decode())
    assert exposed["leadscore_rescore_events_replayed_total"] >= len(history.events)
    assert exposed['leadscore_rescore_missing_offsets{partition="0"}'] == 0
    assert exposed["leadscore_rescore_partitions_rebuilding"] == 0


def test_a_second_swap_changes_nothing_and_every_message_consumed_again_is_a_duplicate(
    history: History, table: ContactTable, kafka_bootstrap: str
) -> None:
    """A swap cut short by a crash is done again: the contacts it rescored change no more.
    The old plans are then a history, each contact's by its version label."""
    version = parse_plan_version(NEW_VERSION).installed_at(history.end_time)
    states = _contact_states(table.store, history.old)
    metrics = Metrics()
    outbox = _Outbox()
    plan_history = PlanHistory.single(OLD_PLANS).then(version)
    for old_plans in (OLD_PLANS, plan_history):
        outbox.sent.clear()
        for partition in range(PARTITIONS):
            rebuilt = asyncio.run(
                rebuild_partition(
                    history.source, partition, history.ends[partition], version, metrics
                )
            )
            asyncio.run(rebuilt.swap(states, cast(Outbox, outbox), old_plans, history.end_time))
        assert bool(outbox.sent) == (old_plans is OLD_PLANS)
    processor = _processor(states, outbox, metrics, version.plans, history.topics, table.store)
    again: list[Message] = []
    for partition in range(PARTITIONS):
        for topic in (history.topics.events, history.topics.rerouted):
            for record in _read_all(kafka_bootstrap, topic, partition):
                key = record.key()
                if topic == history.topics.events and _owner(key.decode()) != partition:
                    continue  # forwarded again by the live path: not this test's point
                if record.value() in (b"{not json", UNREADABLE):
                    continue  # dead-lettered again: not this test's point
                again.append(
                    Message(
                        topic,
                        partition,
                        record.offset(),
                        0.0,
                        0,
                        record.headers(),
                        key,
                        record.value(),
                        None,
                    )
                )

    async def consume_again() -> None:
        for message in again:
            await processor.handle(message)

    asyncio.run(consume_again())
    redelivered = len(again)
    exposed = parse_metrics(metrics.exposition().decode())
    outcomes = {
        name: value
        for name, value in exposed.items()
        if name.startswith("leadscore_events_consumed")
    }
    assert redelivered > len(history.events) and sum(outcomes.values()) == redelivered
    duplicates = sum(v for name, v in outcomes.items() if 'outcome="duplicate"' in name)
    assert duplicates == redelivered, outcomes
    assert outbox.sent == []


def _processor(
    states: ContactStates,
    outbox: _Outbox,
    metrics: Metrics,
    plans: PlanSet,
    topics: TopicNames,
    store: ContactStore,
) -> Processor:
    timers = Timers("event", states, lambda: store, lambda: cast(ProducerT, None), topics.ticks)
    rerouter = Rerouter(topics.events, PARTITIONS, cast(Outbox, outbox), metrics)
    live = LivePlans(PlanHistory.single(plans), metrics.registry, time.time)
    return Processor(live, topics, states, cast(Outbox, outbox), timers, metrics, rerouter)


def test_a_rebuild_covers_the_retained_history_only_and_says_so(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The log start moved (retention, here `delete_records`): the rebuild starts there, logs
    the partition and the first offset, counts it, and a catch-up continues where it stopped."""
    events = list(generate(20, 60, seed=3))
    source = _one_partition(kafka_bootstrap, events)
    deleted = 20
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(source.events, 0, deleted)]).values():
        future.result(timeout=30)
    assert _watermarks(kafka_bootstrap, source.events, 0) == (deleted, len(events))
    version = parse_plan_version(NEW_VERSION).installed_at(events[-1].time)
    metrics = Metrics()
    half = 40
    with caplog.at_level(logging.WARNING, logger="streams.worker.rescore.rebuild"):
        rebuilt = asyncio.run(
            rebuild_partition(
                source, 0, {source.events: half, source.rerouted: 0}, version, metrics
            )
        )
    warning = [r.getMessage() for r in caplog.records if r.name == "streams.worker.rescore.rebuild"]
    assert len(warning) == 1 and f"{source.events}[0] starts at offset {deleted}" in warning[0]
    assert "partition 0" in warning[0] and "retention.ms=-1" in warning[0]
    _assert_rebuilt(rebuilt, events[deleted:half], version)

    asyncio.run(rebuilt.catch_up({source.events: len(events), source.rerouted: 0}))
    _assert_rebuilt(rebuilt, events[deleted:], version)
    exposed = parse_metrics(metrics.exposition().decode())
    assert exposed["leadscore_rescore_partial_total"] == 1
    assert exposed['leadscore_rescore_missing_offsets{partition="0"}'] == deleted
    assert exposed["leadscore_rescore_events_replayed_total"] == len(events) - deleted


def _assert_rebuilt(rebuilt: Rebuilt, events: list[TrackingEvent], version: PlanVersion) -> None:
    """The rebuilt states are a replay's, before the replay advances them to its end."""
    end = events[-1].time
    expected = replay(events, version.plans, until=end).states
    assert rebuilt.states.keys() == expected.keys()
    for contact_id, held in rebuilt.states.items():
        state, _ = advance(copy_state(held.state), end, version.plans)
        assert state == expected[contact_id], contact_id


def _one_partition(bootstrap: str, events: list[TrackingEvent]) -> HistorySource:
    """Fresh input and rerouted topics of one partition, the events on the input."""
    topics = TopicNames.with_prefix(new_prefix())
    ensure_topics(bootstrap, [TopicSpec(topics.events, 1), TopicSpec(topics.rerouted, 1)])
    publish(bootstrap, topics.events, events)
    return HistorySource(
        KafkaConnection(bootstrap), topics.events, topics.rerouted, 1, "rebuild-test"
    )


def test_an_event_the_core_fails_on_is_left_out_as_the_live_path_does(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first pass changes states in place; the core's failure (which half-changes the
    state) makes the rebuild replay again with copies, so the contact keeps what it had."""
    events = list(generate(20, 60, seed=4))
    boom = event(BOOM, events[30].time - T0, contact=events[30].contact_id)
    source = _one_partition(kafka_bootstrap, [*events[:30], boom, *events[30:]])
    monkeypatch.setattr(rebuild_module, "score_event", failing_score_event)
    version = parse_plan_version(NEW_VERSION).installed_at(events[-1].time)
    metrics = Metrics()
    ends = {source.events: len(events) + 1, source.rerouted: 0}
    with caplog.at_level(logging.WARNING, logger="streams.worker.rescore.rebuild"):
        rebuilt = asyncio.run(rebuild_partition(source, 0, ends, version, metrics))
    _assert_rebuilt(rebuilt, events, version)
    exposed = parse_metrics(metrics.exposition().decode())
    assert exposed["leadscore_rescore_scoring_errors_total"] == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "streams.worker.rescore.rebuild"]
    assert any("replaying the partition again" in line for line in logged)
