"""The per-message work, without Kafka: events, dead letters, ticks and re-routing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import faust
import pytest
from faust.types import ProducerT
from faust.types.tuples import Message

from streams.kafka.client import binary_message
from streams.kafka.partitioning import partition_for
from streams.models.events import EventError, TrackingEvent
from streams.models.plan_versions import PlanHistory
from streams.scoring import ContactState, Output, PlanSet, encode_state, load_plans
from streams.scoring.state import SEEN_LIMIT, Award
from streams.worker.flow import processor as processor_module
from streams.worker.flow.outbox import Outbox
from streams.worker.flow.processor import Processor
from streams.worker.flow.reroute import Rerouter
from streams.worker.flow.timers import Timers, encode_tick
from streams.worker.plans.live import LivePlans
from streams.worker.runtime.fencing import Transactions
from streams.worker.settings import TopicNames
from streams.worker.state.states import ContactStates
from streams.worker.state.store import ContactTable
from streams.worker.web.metrics import Metrics
from tests.support import BOOM, DAY, T0, event, failing_score_event
from tests.worker.harness import EXAMPLE_PLANS

TOPICS = TopicNames.with_prefix("")
PARTITIONS = 6


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[Output] = []
        self.rerouted: list[tuple[Message, int]] = []
        self.dead: list[tuple[Message, EventError]] = []

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        self.sent.extend(outputs)

    async def reroute(self, message: Message, partition: int) -> None:
        self.rerouted.append((message, partition))

    async def dead_letter(self, message: Message, error: EventError) -> bool:
        self.dead.append((message, error))
        return False


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


class _Clock:
    """The wall clock the processor reads, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def parts(
    tmp_path: Path, metrics: Metrics, clock: _Clock
) -> Iterator[tuple[Processor, ContactStates, _Outbox]]:
    app = faust.App("processor-test", store="rocksdb://", datadir=str(tmp_path))
    table = ContactTable(
        app, name="contacts", partitions=PARTITIONS, key_type=bytes, value_type=bytes
    )
    plans = LivePlans(PlanHistory.single(load_plans(EXAMPLE_PLANS)), metrics.registry, time.time)

    async def no_barrier() -> None:
        raise AssertionError("nothing persists in these tests")

    producer = cast(ProducerT, None)
    producers = cast(Transactions, None)
    states = ContactStates(lambda: table.store, producers, "changelog", plans, no_barrier)
    timers = Timers("event", states, lambda: table.store, lambda: producer, TOPICS.ticks)
    outbox = _Outbox()
    rerouter = Rerouter(TOPICS.events, PARTITIONS, cast(Outbox, outbox), metrics)
    processor = Processor(
        plans, TOPICS, states, cast(Outbox, outbox), timers, metrics, rerouter, clock=clock
    )
    yield processor, states, outbox
    table.store.close()


_next_offsets: dict[str, itertools.count[int]] = defaultdict(itertools.count)


def owner(contact: str) -> int:
    return partition_for(contact.encode(), PARTITIONS)


def _beside(contact: str) -> str:
    """Another contact on the same partition (to move that partition's stream time)."""
    return next(f"other-{i}" for i in range(10_000) if owner(f"other-{i}") == owner(contact))


def _message(
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes]],
    offset: int | None,
    partition: int | None = None,
) -> Message:
    """A message on its key's partition unless one is given, at the next offset of its topic
    unless one is given."""
    at = next(_next_offsets[topic]) if offset is None else offset
    where = owner(key.decode()) if partition is None and key is not None else partition or 0
    return Message(topic, where, at, 0.0, 0, headers, key, value, None)


def _event(
    item: TrackingEvent,
    offset: int | None = None,
    partition: int | None = None,
    topic: str = TOPICS.events,
) -> Message:
    return _message(topic, *binary_message(item), offset, partition)


def _tick(contact: str, now: float) -> Message:
    return _message(TOPICS.ticks, contact.encode(), encode_tick(now), [], None)


def _score(states: ContactStates, partition: int, contact: str) -> int | None:
    held = states.get(partition, contact)
    return None if held is None else held.state.plans["lead-score"].score


def test_a_tick_never_advances_a_contact_beyond_the_stream_time(
    parts: tuple[Processor, ContactStates, _Outbox],
) -> None:
    processor, states, outbox = parts
    opened = event("email.opened", 0, contact="c")

    async def scenario() -> None:
        await processor.handle(_event(opened))
        # A tick stamped 40 days on, e.g. sent before a crash by a worker that had consumed
        # further: the partition's stream time is still the opening's, so nothing is due.
        await processor.handle(_tick("c", opened.time + 40 * DAY))
        held = states.get(owner("c"), "c")
        assert held is not None and held.state.plans["lead-score"].score == 10
        # Once the stream reaches day 31, the same tick fires `went-quiet` (due at day 30).
        await processor.handle(_event(event("email.opened", 31 * DAY, contact="other")))
        await processor.handle(_tick("c", opened.time + 40 * DAY))

    asyncio.run(scenario())
    held = states.get(owner("c"), "c")
    assert held is not None and held.state.plans["lead-score"].score == 0
    reset = [o for o in outbox.sent if o.contact_id == "c" and o.data["plan"] == "lead-score"][-1]
    assert reset.data["cause"] == {"rules": ["went-quiet"], "timer": True}


def test_the_history_holds_what_events_and_ticks_changed_and_nothing_twice(
    parts: tuple[Processor, ContactStates, _Outbox],
) -> None:
    processor, states, outbox = parts
    opened = event("email.opened", 0, contact="c")

    async def scenario() -> None:
        await processor.handle(_event(opened, 0))
        await processor.handle(_event(opened, 0))  # consumed again after a crash: skipped
        await processor.handle(_event(event("email.opened", 31 * DAY, contact=_beside("c"))))
        await processor.handle(_tick("c", opened.time + 31 * DAY))  # went-quiet, no-offer-visit

    asyncio.run(scenario())
    held = states.get(owner("c"), "c")
    assert held is not None
    for plan, scores in (("lead-score", [10, 0]), ("icp-fit", [-10])):
        sent = [o.data for o in outbox.sent if o.contact_id == "c" and o.data.get("plan") == plan]
        changes = held.history.changes(plan, 20)
        assert [change["score"] for change in changes] == [data["score"] for data in sent]
        assert [change["score"] for change in changes] == scores
        assert [change["cause"] for change in changes] == [data["cause"] for data in sent]


def test_an_event_consumed_again_is_skipped_by_its_offset_beyond_the_id_window(
    parts: tuple[Processor, ContactStates, _Outbox],
) -> None:
    """After a crash, a replay may hold more events of one contact than the core remembers
    ids of; the applied offset in the contact's record still recognises every one."""
    processor, states, outbox = parts
    opens = [event("email.opened", minute * 60, contact="c") for minute in range(SEEN_LIMIT + 2)]

    async def scenario() -> None:
        for offset, item in enumerate(opens):
            await processor.handle(_event(item, offset))
        held = states.get(owner("c"), "c")
        assert held is not None and held.applied == {owner("c"): len(opens) - 1}
        before = (held.state.plans["lead-score"].score, len(outbox.sent))
        await processor.handle(_event(opens[0], 0))  # its id has left the core's window
        after = states.get(owner("c"), "c")
        assert after is not None
        assert (after.state.plans["lead-score"].score, len(outbox.sent)) == before

    asyncio.run(scenario())


async def _forwarded(message: Message, owner: int, offset: int) -> Message:
    """The copy `Outbox.reroute` sends, as the owner consumes it from the rerouted topic."""
    sent: list[Message] = []

    class _Producer:
        async def send(
            self,
            topic: str,
            key: bytes | None,
            value: bytes,
            headers: list[tuple[str, bytes]],
            partition: int,
        ) -> None:
            sent.append(Message(topic, partition, offset, 0.0, 0, headers, key, value, None))

    await Outbox(cast(Transactions, _Producer()), TOPICS, lambda: 1_048_588).reroute(message, owner)
    (copy,) = sent
    assert copy.topic == TOPICS.rerouted
    return copy


def test_an_event_on_a_partition_that_does_not_own_its_key_is_forwarded_not_scored(
    parts: tuple[Processor, ContactStates, _Outbox], metrics: Metrics
) -> None:
    processor, states, outbox = parts
    opened = event("email.opened", 0, contact="c")
    right = owner("c")
    wrong = (right + 1) % PARTITIONS
    misplaced = _event(opened, 7, partition=wrong)

    asyncio.run(processor.handle(misplaced))
    assert outbox.rerouted == [(misplaced, right)]
    assert outbox.sent == []
    assert all(states.get(partition, "c") is None for partition in range(PARTITIONS))
    metrics.flush()  # counts reach the counters per batch (the worker flushes at each commit)
    registry = metrics.registry
    assert registry.get_sample_value("leadscore_events_rerouted_total") == 1
    assert registry.get_sample_value(
        "leadscore_events_consumed_total", {"type": "email.opened", "outcome": "applied"}
    ) in (None, 0)

    # Its copy, consumed from the rerouted topic on the right partition, is scored there and
    # remembered by where it was first consumed.
    copy = asyncio.run(_forwarded(misplaced, right, 0))
    assert copy.key == misplaced.key and copy.value == misplaced.value
    assert list(copy.headers)[: len(misplaced.headers)] == list(misplaced.headers)
    asyncio.run(processor.handle(copy))
    assert outbox.rerouted == [(misplaced, right)]
    held = states.get(right, "c")
    assert held is not None and held.applied == {wrong: 7}
    assert held.state.plans["lead-score"].score == 10


def test_a_message_without_a_key_is_left_to_the_decoder(
    parts: tuple[Processor, ContactStates, _Outbox],
) -> None:
    processor, _, outbox = parts
    _, value, headers = binary_message(event("email.opened", 0, contact="c"))
    asyncio.run(processor.handle(_message(TOPICS.events, None, value, headers, None, 1)))
    assert outbox.rerouted == []


def test_a_message_on_the_rerouted_topic_without_its_origin_is_dead_lettered(
    parts: tuple[Processor, ContactStates, _Outbox],
) -> None:
    processor, states, outbox = parts
    stray = _event(event("email.opened", 0, contact="c"), 0, owner("c"), TOPICS.rerouted)
    asyncio.run(processor.handle(stray))
    assert [message for message, _ in outbox.dead] == [stray]
    assert states.get(owner("c"), "c") is None


def test_an_event_is_known_by_where_it_was_first_consumed_whichever_topic_brought_it(
    parts: tuple[Processor, ContactStates, _Outbox], metrics: Metrics
) -> None:
    """Forwarded events from input offsets below the contact's last direct one are new; a
    forward sent twice (a crash before its input offset was committed) is skipped by its
    origin, even with more of the contact's events in between than the core remembers ids of;
    and the rerouted topic's own offsets are never compared with the input's."""
    processor, states, outbox = parts
    at = owner("c")
    elsewhere = (at + 1) % PARTITIONS
    first = event("email.opened", 0, contact="c")
    clicks = [event("email.clicked", 60 * (i + 1), contact="c") for i in range(SEEN_LIMIT + 2)]
    misplaced = [_event(click, 3 + i, elsewhere) for i, click in enumerate(clicks)]
    later = event("email.replied", DAY, contact="c")

    async def scenario() -> None:
        await processor.handle(_event(first, 100))
        for offset, message in enumerate(misplaced):
            await processor.handle(await _forwarded(message, at, offset))
        assert _score(states, at, "c") == 10 + 20 * len(clicks)
        sent = len(outbox.sent)
        # Forwarded again after a crash, and the input consumed again: nothing changes.
        await processor.handle(await _forwarded(misplaced[0], at, len(misplaced)))
        await processor.handle(_event(first, 100))
        assert (_score(states, at, "c"), len(outbox.sent)) == (10 + 20 * len(clicks), sent)
        await processor.handle(_event(later, 101))

    asyncio.run(scenario())
    held = states.get(at, "c")
    assert held is not None and held.applied == {at: 101, elsewhere: 3 + len(clicks) - 1}
    assert held.state.plans["lead-score"].score == 10 + 20 * len(clicks) + 30
    metrics.flush()
    duplicates = metrics.registry.get_sample_value(
        "leadscore_events_consumed_total", {"type": "email.clicked", "outcome": "duplicate"}
    )
    assert duplicates == 1


def test_an_event_the_core_fails_on_is_dead_lettered_and_the_cached_state_kept(
    parts: tuple[Processor, ContactStates, _Outbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    processor, states, outbox = parts
    monkeypatch.setattr(processor_module, "score_event", failing_score_event)
    opened = _event(event("email.opened", 0, contact="c"))
    boom = _event(event(BOOM, 10, contact="c"))

    async def scenario() -> bytes:
        await processor.handle(opened)
        held = states.get(owner("c"), "c")
        assert held is not None and states.cached(owner("c"), "c")  # the core gets the cached state
        before = encode_state(held.state)
        await processor.handle(boom)
        after = states.get(owner("c"), "c")
        assert after is not None and encode_state(after.state) == before
        await processor.handle(_event(event("email.clicked", 20, contact="c")))
        return before

    asyncio.run(scenario())
    ((message, error),) = outbox.dead
    assert message is boom and error.reason == "scoring-error"
    assert "simulated bug in the scoring core" in str(error)
    held = states.get(owner("c"), "c")
    assert held is not None and held.state.plans["lead-score"].score == 30


def test_a_tick_the_core_fails_on_leaves_the_contact_as_it_was(
    parts: tuple[Processor, ContactStates, _Outbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    processor, states, outbox = parts

    def failing_advance(state: ContactState, now: float, plans: PlanSet) -> None:
        state.plans["lead-score"].awards.append(Award("boom", now, 1_000, None))
        raise RuntimeError("simulated bug in advance")

    async def scenario() -> None:
        await processor.handle(_event(event("email.opened", 0, contact="c")))
        await processor.handle(_event(event("email.opened", 31 * DAY, contact=_beside("c"))))
        held = states.get(owner("c"), "c")
        assert held is not None and states.cached(owner("c"), "c")
        before = encode_state(held.state)
        monkeypatch.setattr(processor_module, "advance", failing_advance)
        await processor.handle(_tick("c", T0 + 31 * DAY))
        after = states.get(owner("c"), "c")
        assert after is not None and encode_state(after.state) == before

    asyncio.run(scenario())
    assert not outbox.dead


def test_a_tick_whose_key_is_not_utf8_is_dropped(
    parts: tuple[Processor, ContactStates, _Outbox],
) -> None:
    """Ticks are the timer's own messages; one with a key that no contact id encodes to is
    not ours, and is not decoded lossily into some other contact's id."""
    processor, states, outbox = parts

    async def scenario() -> None:
        await processor.handle(_event(event("email.opened", 0, contact="c\ufffd")))
        await processor.handle(_event(event("email.opened", 31 * DAY, contact=_beside("c\ufffd"))))
        await processor.handle(
            _message(TOPICS.ticks, b"c\xff", encode_tick(T0 + 31 * DAY), [], None, owner("c\ufffd"))
        )

    asyncio.run(scenario())
    held = states.get(owner("c\ufffd"), "c\ufffd")
    assert held is not None and held.state.plans["lead-score"].score == 10
    assert not outbox.dead


def test_the_processing_delay_runs_from_the_message_timestamp_to_the_outputs(
    parts: tuple[Processor, ContactStates, _Outbox], metrics: Metrics, clock: _Clock
) -> None:
    """Kafka's timestamp, not the event's time: a replay of old events is not late."""
    processor, _, outbox = parts
    delay, lag = "leadscore_processing_delay_seconds", "leadscore_event_to_output_seconds"

    def observed(name: str) -> tuple[float | None, float | None]:
        value = metrics.registry.get_sample_value
        return value(f"{name}_count"), value(f"{name}_sum")

    def stamped(message: Message, timestamp: float) -> Message:
        return Message(
            message.topic,
            message.partition,
            message.offset,
            timestamp,
            0,
            message.headers,
            message.key,
            message.value,
            None,
        )

    old = event("email.opened", -30 * DAY, contact="c")
    clock.now = T0 + 2.5

    async def scenario() -> None:
        await processor.handle(stamped(_event(old), T0))
        assert observed(delay) == (1, 2.5)
        assert observed(lag) == (1, 30 * DAY + 2.5)
        await processor.handle(stamped(_event(old), T0))  # a duplicate: no outputs, no sample
        await processor.handle(stamped(_event(event("email.opened", 0, contact="c")), -0.001))
        assert observed(delay) == (1, 2.5)  # -1 ms is Kafka's "no timestamp"
        assert observed(lag) == (2, 30 * DAY + 2.5 + 2.5)
        await processor.handle(_event(event("email.opened", 31 * DAY, contact="other")))
        clock.now = T0 + 40 * DAY
        await processor.handle(stamped(_tick("c", T0 + 31 * DAY), T0 + 40 * DAY - 0.25))

    asyncio.run(scenario())
    assert outbox.sent[-1].data["cause"] == {"rules": ["went-quiet"], "timer": True}
    assert observed(delay) == (2, 2.75)
    assert metrics.registry.get_sample_value(f"{delay}_bucket", {"le": "0.25"}) == 1
