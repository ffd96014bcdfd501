"""The per-message work, without Kafka: events, dead letters and ticks."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import faust
import pytest
from faust.types import ProducerT
from faust.types.tuples import Message

from streams.kafka.client import binary_message
from streams.models.events import TrackingEvent
from streams.scoring import Output, load_plans
from streams.scoring.state import SEEN_LIMIT
from streams.worker.fencing import PartitionProducers
from streams.worker.metrics import Metrics
from streams.worker.processor import Outbox, Processor
from streams.worker.settings import TopicNames
from streams.worker.states import ContactStates
from streams.worker.store import ContactTable
from streams.worker.timers import Timers, encode_tick
from tests.support import DAY, event
from tests.worker.harness import EXAMPLE_PLANS

TOPICS = TopicNames.with_prefix("")


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[Output] = []

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        self.sent.extend(outputs)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Processor, ContactStates, _Outbox]]:
    app = faust.App("processor-test", store="rocksdb://", datadir=str(tmp_path))
    table = ContactTable(app, name="contacts", partitions=1, key_type=bytes, value_type=bytes)
    plans = load_plans(EXAMPLE_PLANS)

    async def no_barrier() -> None:
        raise AssertionError("nothing persists in these tests")

    producer = cast(ProducerT, None)
    producers = cast(PartitionProducers, None)
    states = ContactStates(lambda: table.store, producers, "changelog", plans, no_barrier)
    timers = Timers("event", states, lambda: table.store, lambda: producer, TOPICS.ticks)
    outbox = _Outbox()
    processor = Processor(plans, TOPICS, states, cast(Outbox, outbox), timers, Metrics())
    yield processor, states, outbox
    table.store.close()


_next_offsets: dict[str, itertools.count[int]] = defaultdict(itertools.count)


def _message(
    topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]], offset: int | None
) -> Message:
    """A message of partition 0, at the next offset of its topic unless one is given."""
    at = next(_next_offsets[topic]) if offset is None else offset
    return Message(topic, 0, at, 0.0, 0, headers, key, value, None)


def _event(item: TrackingEvent, offset: int | None = None) -> Message:
    return _message(TOPICS.events, *binary_message(item), offset)


def _tick(contact: str, now: float) -> Message:
    return _message(TOPICS.ticks, contact.encode(), encode_tick(now), [], None)


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
        held = states.get(0, "c")
        assert held is not None and held.state.plans["lead-score"].score == 10
        # Once the stream reaches day 31, the same tick fires `went-quiet` (due at day 30).
        await processor.handle(_event(event("email.opened", 31 * DAY, contact="other")))
        await processor.handle(_tick("c", opened.time + 40 * DAY))

    asyncio.run(scenario())
    held = states.get(0, "c")
    assert held is not None and held.state.plans["lead-score"].score == 0
    reset = [o for o in outbox.sent if o.contact_id == "c" and o.data["plan"] == "lead-score"][-1]
    assert reset.data["cause"] == {"rules": ["went-quiet"], "timer": True}


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
        held = states.get(0, "c")
        assert held is not None and held.applied_offset == len(opens) - 1
        before = (held.state.plans["lead-score"].score, len(outbox.sent))
        await processor.handle(_event(opens[0], 0))  # its id has left the core's window
        after = states.get(0, "c")
        assert after is not None
        assert (after.state.plans["lead-score"].score, len(outbox.sent)) == before

    asyncio.run(scenario())
