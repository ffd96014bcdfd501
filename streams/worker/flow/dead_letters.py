"""Dead letters that the broker will take, whatever the input was.

A dead letter is the original key, value and headers plus leadscore's `leadscore.dlq.*`
headers, so it is larger than the message it reports. An input near the input topic's size
limit made the dead-letter produce fail (`MSG_SIZE_TOO_LARGE`: librdkafka's own
`message.max.bytes` is 1,000,000, below the broker's default of 1,048,588), the fetcher crash,
and every restart crash again on the same message. So:

- the producer's limits come from the dead-letter topic's `max.message.bytes`, read with the
  admin API at start (`read_max_message_bytes`, `producer_limits`);
- a dead letter that would still be larger than that is sent truncated (`fit`): every
  `leadscore.dlq.*` header, the key, the first bytes of the value, and a
  `leadscore.dlq.truncated` header with the original sizes; the original headers are dropped.

`fit` is a plain function of the message and the limit, so any producer path can call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # admin does not re-export it to mypy

from streams.kafka.security import KafkaConnection, as_connection

DLQ_HEADER = "leadscore.dlq."
"""Prefix of the headers a dead letter carries besides the original ones."""
TRUNCATED_HEADER = DLQ_HEADER + "truncated"
MAX_ERROR_BYTES = 4096
"""Longest `leadscore.dlq.error` header: an exception's text can be anything."""
MIN_DEAD_LETTER_BYTES = 16 * 1024
"""Smallest `max.message.bytes` the dead-letter topic may have: room for the headers."""
PRODUCER_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes` (and `batch.size`), kept when the topic allows more."""
RECORD_OVERHEAD = 128
"""Bytes a record batch of one record takes beyond its key, value and headers, rounded up:
61 of batch header and at most 40 of the record's own length fields."""
HEADER_OVERHEAD = 10
"""Bytes one header takes beyond its name and value (two length fields), rounded up."""

Headers = Sequence[tuple[str, bytes | None]]
"""A null header value is legal (Java's `new RecordHeader(name, null)`) and is kept as null."""


class DeadLetterTopicError(RuntimeError):
    """The dead-letter topic's configuration cannot work."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    truncated: bool


def read_max_message_bytes(kafka: str | KafkaConnection, topic: str, timeout: float = 30.0) -> int:
    """The topic's `max.message.bytes` (the broker's default when the topic sets none)."""
    admin = AdminClient(as_connection(kafka).librdkafka())
    resource = ConfigResource("topic", topic)
    future = admin.describe_configs([resource], request_timeout=timeout)[resource]
    entries = future.result(timeout=timeout)
    limit = int(entries["max.message.bytes"].value)
    if limit < MIN_DEAD_LETTER_BYTES:
        raise DeadLetterTopicError(
            f"topic {topic}: max.message.bytes is {limit}, too small for dead letters; set it "
            f"to at least {MIN_DEAD_LETTER_BYTES} (kafka-configs --alter --entity-type topics "
            f"--entity-name {topic} --add-config max.message.bytes=1048588)"
        )
    return limit


def producer_limits(max_message_bytes: int) -> dict[str, int]:
    """librdkafka settings under which a dead letter of up to `max_message_bytes` is sent.

    `message.max.bytes` may not be lower than the topic's limit, or librdkafka refuses a dead
    letter the broker would take; `batch.size` may not be higher, or a batch of several dead
    letters could exceed what the broker takes in one (a larger single message is still sent
    alone).
    """
    return {
        "message.max.bytes": max(max_message_bytes, PRODUCER_MESSAGE_MAX_BYTES),
        "batch.size": min(max_message_bytes, PRODUCER_MESSAGE_MAX_BYTES),
    }


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """An upper bound of the bytes the broker counts for this message alone in a batch."""
    size = RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    return size + sum(
        HEADER_OVERHEAD + len(name.encode()) + len(raw or b"") for name, raw in headers
    )


def fit(key: bytes | None, value: bytes | None, headers: Headers, limit: int) -> DeadLetter:
    """The dead letter as it is when it fits in `limit` bytes, else truncated (see above)."""
    if record_size(key, value, headers) <= limit:
        return DeadLetter(key, value, list(headers), truncated=False)
    own = [(name, raw) for name, raw in headers if name.startswith(DLQ_HEADER)]
    original = {
        "key_bytes": len(key or b""),
        "value_bytes": len(value or b""),
        "headers_dropped": len(headers) - len(own),
    }
    kept = [*own, (TRUNCATED_HEADER, orjson.dumps(original))]
    room = max(limit - record_size(None, None, kept), 0)
    kept_key = None if key is None else key[:room]
    room -= len(kept_key or b"")
    kept_value = None if value is None else value[:room]
    return DeadLetter(kept_key, kept_value, kept, truncated=True)


def sendable_name(name: str) -> str:
    """A header name as a producer can send it: the bytes of a name that is not UTF-8 (kept
    as surrogates by the worker's reader, `streams.kafka.records`) written `\\xNN`, so that
    the dead letter still shows them. confluent-kafka cannot send such bytes (it sends the
    `repr` of a bytes name) and crashes the process on a name with surrogates."""
    if name.isascii():
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def error_text(message: str) -> bytes:
    """The `leadscore.dlq.error` header: UTF-8, at most `MAX_ERROR_BYTES`."""
    raw = message.encode("utf-8", errors="replace")
    if len(raw) <= MAX_ERROR_BYTES:
        return raw
    return raw[:MAX_ERROR_BYTES].decode("utf-8", errors="ignore").encode()
