"""Publishing tracking events to leadscore from any Python program (confluent-kafka).

The one setting that matters: `partitioner=murmur2_random`. The worker keeps each contact's
state on the partition its events arrive on, and Faust (through aiokafka) hashes keys with
Kafka's Java murmur2. librdkafka's default partitioner (`consistent_random`, CRC32) sends the
same contact id to a different partition, which would split a contact's history between two
states. `murmur2_random` is the Java client's hash, so a producer built here, a Java producer
with default settings and the worker all agree; tests/kafka/test_client.py checks it against
aiokafka's partitioner on a real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Literal, cast

import orjson
from confluent_kafka import KafkaError, Message, Producer

from streams.kafka.partitioning import LIBRDKAFKA_PARTITIONER
from streams.kafka.security import KafkaConnection, as_connection
from streams.models.events import TrackingEvent

Mode = Literal["binary", "structured"]
Headers = list[tuple[str, bytes | None]]
"""A message's headers; a header's value may be null (Java's `new RecordHeader(name, null)`)."""

PRODUCER_DEFAULTS: Mapping[str, str | int | float | bool] = {
    "partitioner": LIBRDKAFKA_PARTITIONER,
    "enable.idempotence": True,
    "linger.ms": 5,
}
"""Settings every leadscore producer uses; `partitioner` is the one that must not change."""

UNASSIGNED = -1
"""librdkafka's RD_KAFKA_PARTITION_UA: let the partitioner choose."""

STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"


class PublishError(RuntimeError):
    """Messages the broker did not accept; `errors` holds librdkafka's reasons."""

    def __init__(self, errors: Sequence[KafkaError]) -> None:
        super().__init__(f"{len(errors)} message(s) not delivered, first: {errors[0]}")
        self.errors = list(errors)


def binary_message(event: TrackingEvent) -> tuple[bytes, bytes, Headers]:
    """Key, value and headers of `event` in the CloudEvents Kafka binding's binary mode."""
    attributes = event.to_cloudevent()
    data = attributes.pop("data")
    content_type = attributes.pop("datacontenttype")
    headers: Headers = [(f"ce_{name}", str(value).encode()) for name, value in attributes.items()]
    headers.append(("content-type", str(content_type).encode()))
    return event.contact_id.encode(), orjson.dumps(data), headers


def structured_message(event: TrackingEvent) -> tuple[bytes, bytes, Headers]:
    """Key, value and headers of `event` in structured mode (the whole CloudEvent as JSON)."""
    headers: Headers = [("content-type", STRUCTURED_CONTENT_TYPE)]
    return event.contact_id.encode(), orjson.dumps(event.to_cloudevent()), headers


class KeyedProducer:
    """A confluent-kafka producer with leadscore's settings, for messages to any topic.

    Deliveries are tracked by sequence number, so `wait_delivered()` can tell that every
    message queued before it is acknowledged while more are being queued (the worker's commit
    barrier), which `flush()` cannot: it waits for an empty queue. Refused messages are
    collected and raised by `check()` and `flush()`. The async methods are for the worker's
    event loop; the others block.
    """

    POLL_INTERVAL = 0.002
    """Seconds between two looks at the deliveries in `wait_delivered`."""
    POLL_EVERY = 64
    """Messages queued between two servings of the delivery callbacks while producing.
    Serving them after every message cost 20-30 µs a message on the shared 2-core machine
    against about 10 µs for the queuing itself (bench/README.md); `wait_delivered`, `flush`
    and a full queue serve them anyway, so acknowledgements are never missed, only read later."""

    def __init__(
        self,
        connection: KafkaConnection,
        config: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self._producer = Producer(connection.librdkafka({**PRODUCER_DEFAULTS, **(config or {})}))
        self._errors: list[KafkaError] = []
        self._queued = 0
        self._pending: dict[int, None] = {}
        """Sequence numbers not yet acknowledged, oldest first (dicts keep insertion order)."""
        self.acknowledged: dict[tuple[str, int], int] = {}
        """The highest acknowledged offset per (topic, partition)."""

    @property
    def native(self) -> Producer:
        """The librdkafka producer itself, for its transaction calls."""
        return self._producer

    def try_produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> bool:
        """Queue one message (partitioned by key unless `partition` is given); False, with
        nothing queued, when librdkafka's local queue is full."""
        sequence = self._queued
        try:
            self._producer.produce(
                topic,
                value=value,
                key=key,
                headers=cast(list[tuple[str, str | bytes | None]], headers),
                partition=UNASSIGNED if partition is None else partition,
                on_delivery=partial(self._delivered, sequence),
            )
        except BufferError:
            return False
        self._queued += 1
        self._pending[sequence] = None
        if not self._queued % self.POLL_EVERY:
            self._producer.poll(0)
        return True

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Queue one message, waiting for room in the local queue if need be."""
        while not self.try_produce(topic, key, value, headers, partition):
            self._producer.poll(0.1)  # the local queue is full: let deliveries drain it

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Queue one message; while the local queue is full, let the event loop run."""
        while not self.try_produce(topic, key, value, headers, partition):
            await asyncio.to_thread(self._producer.poll, 0.1)

    async def wait_delivered(self) -> None:
        """Return once every message queued so far is acknowledged (or refused: `check()`)."""
        sequence = self._queued
        while (oldest := next(iter(self._pending), None)) is not None and oldest < sequence:
            self._producer.poll(0)
            await asyncio.sleep(self.POLL_INTERVAL)

    def check(self) -> None:
        """Raise `PublishError` for the messages refused since the last check."""
        if self._errors:
            errors, self._errors = self._errors, []
            raise PublishError(errors)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued message is acknowledged, or raise."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise TimeoutError(f"{remaining} message(s) still queued after {timeout}s")
        self.check()

    def _delivered(self, sequence: int, error: KafkaError | None, message: Message) -> None:
        self._pending.pop(sequence, None)
        if error is not None:
            self._errors.append(error)
            return
        where = (cast(str, message.topic()), cast(int, message.partition()))
        offset = cast(int, message.offset())
        if offset > self.acknowledged.get(where, -1):
            self.acknowledged[where] = offset


class EventPublisher:
    """A producer of tracking events keyed by contact id, partitioned as the worker expects.

    Use as a context manager, or call `close()`: both flush and raise `PublishError` when the
    broker refused a message, so a caller never believes undelivered events were sent.
    `kafka` is a bootstrap string (an unsecured cluster) or a `KafkaConnection` with TLS/SASL
    settings (`streams.kafka.security`).
    """

    def __init__(
        self,
        kafka: str | KafkaConnection,
        topic: str,
        *,
        mode: Mode = "binary",
        config: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self.topic = topic
        self._encode = binary_message if mode == "binary" else structured_message
        self._producer = KeyedProducer(as_connection(kafka), config)

    def publish(self, event: TrackingEvent) -> None:
        """Queue one event; delivery is confirmed by `flush()`."""
        self.publish_raw(*self._encode(event))

    def publish_raw(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Queue a message as given (tests use it for input the worker must dead-letter)."""
        self._producer.produce(self.topic, key, value, headers)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued message is acknowledged, or raise `PublishError`."""
        self._producer.flush(timeout)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
