"""The worker's way out: outputs, dead letters and forwards, into its one transaction.

A module of its own because the live path (`streams.worker.flow.processor`), the re-routing
(`streams.worker.flow.reroute`) and the rebuild for rescoring all send through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from faust.types.tuples import Message

from streams.kafka.client import Headers
from streams.models.events import EventError
from streams.models.outputs import Output
from streams.worker.flow import dead_letters
from streams.worker.flow.dead_letters import DLQ_HEADER
from streams.worker.flow.reroute import REROUTED_HEADER, header_list, origin_headers
from streams.worker.runtime.fencing import Transactions
from streams.worker.settings import TopicNames

CONTENT_TYPE = ("content-type", b"application/cloudevents+json; charset=UTF-8")


def dead_letter_headers(message: Message, error: EventError) -> Headers:
    """The original headers (null values kept; names that are not UTF-8 as
    `dead_letters.sendable_name` writes them) plus why and where from, like Kafka Connect's
    error headers."""
    return [
        *((dead_letters.sendable_name(name), raw) for name, raw in header_list(message.headers)),
        (DLQ_HEADER + "reason", error.reason.encode()),
        (DLQ_HEADER + "error", dead_letters.error_text(str(error))),
        *origin_headers(DLQ_HEADER, message),
    ]


class Outbox:
    """Sends outputs and dead letters through librdkafka without waiting for each one.

    Each goes into the worker's open transaction, which commits with the consumed offsets, so
    a worker whose partitions moved on cannot make it visible (`streams.worker.runtime.fencing`).

    Waiting per message would cap throughput at one round trip per event; instead
    `barrier()`, run before every persist, waits until everything sent before it is
    acknowledged and raises if anything was refused, so a state is never made durable while
    one of its outputs was lost. librdkafka rather than Faust's aiokafka producer: queuing a
    message costs a few microseconds in C instead of about 40 in Python (bench/README.md).
    """

    def __init__(
        self,
        producer: Transactions,
        topics: TopicNames,
        dead_letter_limit: Callable[[], int],
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._dead_letter_limit = dead_letter_limit

    async def send(self, partition: int, outputs: Sequence[Output]) -> None:
        """Send the outputs of a message of input partition `partition`."""
        for output in outputs:
            topic = self._topics.alerts if output.kind == "alert" else self._topics.updates
            await self._send(topic, output.contact_id.encode(), output.to_bytes(), [CONTENT_TYPE])

    async def dead_letter(self, message: Message, error: EventError) -> bool:
        """Send the dead letter, truncated if it is too large for the topic; True if it was."""
        letter = dead_letters.fit(
            message.key,
            message.value,
            dead_letter_headers(message, error),
            self._dead_letter_limit(),
        )
        await self._send(
            self._topics.dead_letters,
            letter.key,
            letter.value,
            letter.headers,
        )
        return letter.truncated

    async def reroute(self, message: Message, partition: int) -> None:
        """Forward `message` as it is, plus where it came from, to `partition` of the rerouted
        topic (`streams.worker.flow.reroute`); `barrier` waits for it like for any output, and it
        goes out in the worker's transaction like any output."""
        headers = [*header_list(message.headers), *origin_headers(REROUTED_HEADER, message)]
        await self._send(self._topics.rerouted, message.key, message.value, headers, partition)

    async def barrier(self) -> None:
        """Return once everything sent so far is acknowledged; raise if anything was refused."""
        await self._producer.barrier()

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Send in the worker's transaction, to `partition` of `topic`, or by key when None."""
        await self._producer.send(topic, key, value, headers, partition)
