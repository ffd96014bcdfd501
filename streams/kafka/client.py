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

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Literal

import orjson
from confluent_kafka import KafkaError, Message, Producer

from streams.models.events import TrackingEvent

Mode = Literal["binary", "structured"]
Headers = list[tuple[str, bytes]]

PRODUCER_DEFAULTS: Mapping[str, str | int | float | bool] = {
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "linger.ms": 5,
}
"""Settings every leadscore producer uses; `partitioner` is the one that must not change."""

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
    headers = [(f"ce_{name}", str(value).encode()) for name, value in attributes.items()]
    headers.append(("content-type", str(content_type).encode()))
    return event.contact_id.encode(), orjson.dumps(data), headers


def structured_message(event: TrackingEvent) -> tuple[bytes, bytes, Headers]:
    """Key, value and headers of `event` in structured mode (the whole CloudEvent as JSON)."""
    headers = [("content-type", STRUCTURED_CONTENT_TYPE)]
    return event.contact_id.encode(), orjson.dumps(event.to_cloudevent()), headers


class EventPublisher:
    """A producer of tracking events keyed by contact id, partitioned as the worker expects.

    Use as a context manager, or call `close()`: both flush and raise `PublishError` when the
    broker refused a message, so a caller never believes undelivered events were sent.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        mode: Mode = "binary",
        config: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self.topic = topic
        self._encode = binary_message if mode == "binary" else structured_message
        self._errors: list[KafkaError] = []
        self._producer = Producer(
            {**PRODUCER_DEFAULTS, **(config or {}), "bootstrap.servers": bootstrap}
        )

    def publish(self, event: TrackingEvent) -> None:
        """Queue one event; delivery is confirmed by `flush()`."""
        self.publish_raw(*self._encode(event))

    def publish_raw(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Queue a message as given (tests use it for input the worker must dead-letter)."""
        wire: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=wire, on_delivery=self._delivered
                )
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let deliveries drain it
            else:
                self._producer.poll(0)
                return

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued message is acknowledged, or raise `PublishError`."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise TimeoutError(f"{remaining} message(s) still queued after {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise PublishError(errors)

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

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._errors.append(error)
