"""Re-routing: an event consumed on a partition that does not own its key goes to its owner.

The worker keeps a contact's state on the partition Kafka's murmur2 names for its id
(`streams.kafka.partitioning`). A producer with librdkafka's default partitioner (kcat, and
Go, .NET, Node and Python clients without `partitioner=murmur2_random`) puts most keys
elsewhere; scoring such an event where it landed would split the contact into two states, and
neither look-ups nor the owner would ever see the other. So it is not scored there: it is
forwarded unchanged (key, value, headers, plus headers naming where it came from) to its
owning partition of an internal topic co-partitioned with the input, which the worker
consumes like the input, as Kafka Streams does with its repartition topics.

The forward goes through the `Outbox`, so the commit barrier waits for it like for any
output: the input offset is committed only once the copy is acknowledged. A crash before that
commit forwards the event again. Each event is known by its origin, the input partition and
offset it was first consumed at (the forward's headers say it), and a contact's record keeps
the last origin offset applied per input partition (`states.Held`), so the second copy is
skipped exactly like an input event consumed again; the rerouted topic's own offsets are
never compared with the input's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from faust.types import HeadersArg
from faust.types.tuples import Message

from streams.kafka.client import Headers
from streams.kafka.partitioning import LIBRDKAFKA_PARTITIONER, partition_for
from streams.models.events import EventError, TrackingEvent, decode_kafka_message
from streams.worker.state.states import Origin
from streams.worker.web.metrics import Metrics

logger = logging.getLogger(__name__)


class Forwarder(Protocol):
    """What forwards a message to its owner's partition: the worker's `Outbox`, named by a
    protocol because the outbox imports this module for the forward's headers."""

    async def reroute(self, message: Message, partition: int) -> None: ...


REROUTED_HEADER = "leadscore.rerouted."
"""Prefix of the headers a forwarded message carries besides the original ones."""
_ORIGIN_PARTITION = REROUTED_HEADER + "partition"
_ORIGIN_OFFSET = REROUTED_HEADER + "offset"
_ORIGIN = (_ORIGIN_PARTITION, _ORIGIN_OFFSET)
BAD_FORWARD = "bad-forward"
"""Dead-letter reason of a message on the rerouted topic without a readable origin."""


def header_list(headers: HeadersArg | None) -> Headers:
    """A Faust message's headers as `(name, value)` pairs, whichever form Faust gave them in;
    a value may be null."""
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def origin_headers(prefix: str, message: Message) -> Headers:
    """`<prefix>topic`, `partition` and `offset`: where `message` was consumed."""
    return [
        (prefix + "topic", message.topic.encode()),
        (prefix + "partition", str(message.partition).encode()),
        (prefix + "offset", str(message.offset).encode()),
    ]


class Routing:
    """Decides whether an input message is on its key's partition, and where it was first
    consumed: the live path and a partition's rebuild (`streams.worker.rescore.rebuild`) ask the
    same."""

    def __init__(self, input_topic: str, partitions: int) -> None:
        self._input_topic = input_topic
        self._partitions = partitions

    def origin(self, message: Message) -> Origin:
        """Where `message` was first consumed from the input topic; `EventError` for a message
        on the rerouted topic that does not say (nothing but the worker should write there)."""
        if message.topic == self._input_topic:
            return message.partition, message.offset
        found = {name: value for name, value in header_list(message.headers) if name in _ORIGIN}
        try:
            return int(found[_ORIGIN_PARTITION] or b""), int(found[_ORIGIN_OFFSET] or b"")
        except (KeyError, ValueError):
            raise EventError(
                BAD_FORWARD, f"no {REROUTED_HEADER}partition/offset headers: not a forward"
            ) from None

    def owner(self, message: Message) -> int | None:
        """The partition `message` must be scored on, when that is not where it is.

        Only messages of the input topic are checked: forwards are sent to their owner, and
        ticks to their contact's partition. A message without a key is the decoder's to judge.
        """
        key = message.key
        if key is None or message.topic != self._input_topic:
            return None
        owner = partition_for(key, self._partitions)
        return None if owner == message.partition else owner


class Rerouter(Routing):
    """`Routing`, and the forwarder of messages that are not on their key's partition."""

    def __init__(
        self, input_topic: str, partitions: int, outbox: Forwarder, metrics: Metrics
    ) -> None:
        super().__init__(input_topic, partitions)
        self._outbox = outbox
        self._metrics = metrics
        self._warned: set[str] = set()

    async def forward(self, message: Message, owner: int) -> None:
        """Send `message` to partition `owner` of the rerouted topic, count it, and tell the
        operator once per input topic what the producers must change."""
        await self._outbox.reroute(message, owner)
        self._metrics.rerouted.inc()
        if message.topic not in self._warned:
            self._warned.add(message.topic)
            logger.warning(
                "%s[%s]@%s: the message's key belongs on partition %s (Kafka's murmur2), so it "
                "was re-routed there; more will be, counted in leadscore_events_rerouted_total. "
                "Fix the producers: with librdkafka clients (confluent-kafka, kcat, Go, .NET, "
                "Node) set partitioner=%s; Java clients and Faust agree by default",
                message.topic,
                message.partition,
                message.offset,
                owner,
                LIBRDKAFKA_PARTITIONER,
            )


def read_event(message: Message, routing: Routing) -> tuple[TrackingEvent, Origin]:
    """The event of an input or re-routed message and where it was first consumed; an
    `EventError` is what the live path dead-letters, and what a rebuild skips without sending
    it again (`streams.worker.rescore.rebuild`)."""
    event = decode_kafka_message(message.key, message.value, header_list(message.headers))
    return event, routing.origin(message)
