"""The work for one consumed message: decode, call the core, send outputs, keep state.

Kept apart from Faust's consumer so the shell stays thin and each step reads in order. Outputs
are sent before the new state is written: `ContactStates.persist` relies on that order to
know that every output of a durable state was acknowledged.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable, Mapping, Sequence

from faust.types import HeadersArg
from faust.types.tuples import Message

from streams.models.events import EventError, TrackingEvent, decode_kafka_message
from streams.scoring import Outcome, Output, PlanSet, advance, score_event
from streams.worker.fencing import PartitionProducers
from streams.worker.metrics import INVALID_TYPE, Metrics
from streams.worker.settings import TopicNames
from streams.worker.states import ContactStates, Held
from streams.worker.timers import Timers, decode_tick

logger = logging.getLogger(__name__)

CONTENT_TYPE = ("content-type", b"application/cloudevents+json; charset=UTF-8")
DLQ_HEADER = "leadscore.dlq."
"""Prefix of the headers a dead letter carries besides the original ones."""


def _header_list(headers: HeadersArg | None) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def dead_letter_headers(message: Message, error: EventError) -> list[tuple[str, bytes]]:
    """The original headers plus why and where from, like Kafka Connect's error headers."""
    return [
        *_header_list(message.headers),
        (DLQ_HEADER + "reason", error.reason.encode()),
        (DLQ_HEADER + "error", str(error).encode()),
        (DLQ_HEADER + "topic", message.topic.encode()),
        (DLQ_HEADER + "partition", str(message.partition).encode()),
        (DLQ_HEADER + "offset", str(message.offset).encode()),
    ]


class Outbox:
    """Sends outputs and dead letters through librdkafka without waiting for each one.

    Each goes through the producer of the input partition it comes from, in that producer's
    transaction, so a worker that lost the partition cannot send it (`streams.worker.fencing`).

    Waiting per message would cap throughput at one round trip per event; instead
    `barrier()`, run before every persist, waits until everything sent before it is
    acknowledged and raises if anything was refused, so a state is never made durable while
    one of its outputs was lost. librdkafka rather than Faust's aiokafka producer: queuing a
    message costs a few microseconds in C instead of about 40 in Python (bench/README.md).
    """

    def __init__(self, producers: PartitionProducers, topics: TopicNames) -> None:
        self._producers = producers
        self._topics = topics

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        """Send the outputs of a message of input partition `partition`."""
        for output in outputs:
            topic = self._topics.alerts if output.kind == "alert" else self._topics.updates
            await self._send(
                partition, topic, output.contact_id.encode(), output.to_bytes(), [CONTENT_TYPE]
            )

    async def dead_letter(self, message: Message, error: EventError) -> None:
        headers = dead_letter_headers(message, error)
        await self._send(
            message.partition, self._topics.dead_letters, message.key, message.value, headers
        )

    async def barrier(self) -> None:
        """Return once everything sent so far is acknowledged; raise if anything was refused."""
        await self._producers.barrier()

    async def _send(
        self,
        partition: int,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        await self._producers.producer(partition).send(topic, key, value, headers)


class Processor:
    """One message at a time, in partition order: the consumer's fetch loop awaits `handle`."""

    def __init__(
        self,
        plans: PlanSet,
        topics: TopicNames,
        states: ContactStates,
        outbox: Outbox,
        timers: Timers,
        metrics: Metrics,
    ) -> None:
        self._plans = plans
        self._ticks_topic = topics.ticks
        self._states = states
        self._outbox = outbox
        self._timers = timers
        self._metrics = metrics
        self.processed: dict[tuple[str, int], int] = {}
        """Last offset processed per (topic, partition), for the lag gauge."""

    async def handle(self, message: Message) -> None:
        started = time.perf_counter()
        if message.topic == self._ticks_topic:
            await self._tick(message)
        else:
            await self._event(message)
        self.processed[(message.topic, message.partition)] = message.offset
        self._metrics.agent_time.observe(time.perf_counter() - started)

    async def _event(self, message: Message) -> None:
        try:
            event = decode_kafka_message(message.key, message.value, _header_list(message.headers))
        except EventError as error:
            await self._outbox.dead_letter(message, error)
            self._metrics.events.labels(INVALID_TYPE, "dead_lettered").inc()
            self._metrics.dead_letters.labels(error.reason).inc()
            return
        partition = message.partition
        self._states.observe_time(partition, event.time)
        held = self._states.get(partition, event.contact_id)
        if held is not None and message.offset <= held.applied_offset:
            # Consumed again after a crash: its outputs were acknowledged before the state
            # that includes it became durable (see states.py), so there is nothing to redo.
            self._metrics.events.labels(
                self._metrics.type_label(event.type), Outcome.DUPLICATE
            ).inc()
            return
        step = score_event(None if held is None else held.state, event, self._plans)
        self._metrics.events.labels(self._metrics.type_label(event.type), step.outcome).inc()
        await self._send(partition, step.outputs, event)
        if step.outcome is Outcome.APPLIED:
            self._states.put(partition, event.contact_id, Held(step.state, message.offset))

    async def _tick(self, message: Message) -> None:
        """Advance one contact to the tick's time. A tick is only a hint: one that cannot be
        used is dropped, and the next timer pass sends another if the deadline is still due."""
        self._metrics.ticks.inc()
        contact_id = (message.key or b"").decode(errors="replace")
        now = self._tick_time(message)
        held = None if now is None else self._states.get(message.partition, contact_id)
        if now is None or held is None:
            self._timers.done(message.partition, contact_id)
            return
        state, outputs = advance(held.state, now, self._plans)
        await self._send(message.partition, outputs, None)
        self._states.put(message.partition, contact_id, Held(state, held.applied_offset))

    def _tick_time(self, message: Message) -> float | None:
        """The tick's time, but never later than the partition's clock now.

        After a crash or a rebalance, events are consumed again from the last commit while
        ticks sent before it, stamped with the stream time of events not yet consumed again,
        arrive from their own topic. Advancing a contact that far would fire its deadlines
        before the events that re-arm them; the clock catches up as the events are consumed.
        """
        try:
            sent = decode_tick(message.value)
        except struct.error:
            logger.warning(
                "malformed tick at %s[%s]@%s", message.topic, message.partition, message.offset
            )
            return None
        clock = self._timers.now(message.partition)
        return None if clock is None else min(sent, clock)

    async def _send(
        self, partition: int, outputs: Sequence[Output], event: TrackingEvent | None
    ) -> None:
        if not outputs:
            return
        await self._outbox.send(partition, outputs)
        self._metrics.outputs_sent(outputs, timer=event is None)
        if event is not None:
            self._metrics.event_to_output.observe(max(time.time() - event.time, 0.0))


def plan_event_types(plans: PlanSet) -> Iterable[str]:
    """Event types the plans name: bounded, so they may be metric labels."""
    for plan in plans:
        for when in (*(rule.when for rule in plan.rules), *(rule.of for rule in plan.inactivity)):
            yield from when.types or ()
