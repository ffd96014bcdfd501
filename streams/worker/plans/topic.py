"""The plans topic: every published plan version, read by every worker of a group.

One record per version, keyed by its label, so compaction keeps every version (a contact still
on an older one must find it after a restart) and drops only a label written twice. The value
is a small JSON envelope around the file as written:

    {"format": 1, "version": LABEL, "effective_from": RFC 3339, "change": ..., "text": FILE}

`effective_from` is always set: `plans publish` fills in the publish time when the file has
none, so every worker, whenever it reads the record, switches at the same point. `format`
lets a later leadscore change the envelope: a worker refuses a format newer than it reads
instead of guessing. Versions take over in the order of the topic (one partition), and a record
whose start is earlier than the one before it is refused by every worker alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from streams.kafka.admin import TopicSpec, watermark
from streams.kafka.security import KafkaConnection
from streams.models.errors import EventError
from streams.models.plan_file import PlanError
from streams.models.plan_versions import PlanVersion, parse_plan_version
from streams.models.times import format_time, parse_time
from streams.worker.runtime.topic_settings import COMPACTED

FORMAT = 1
"""The envelope format this leadscore writes and the newest it reads."""
TOPIC = "leadscore-plans"
READ_TIMEOUT = 30.0
"""Seconds to read the topic up to its end at start before giving up."""


def plans_topic(prefix: str) -> str:
    return f"{prefix}{TOPIC}"


def plans_topic_spec(prefix: str) -> TopicSpec:
    """Compacted, one partition: one order of versions that every worker reads alike."""
    return TopicSpec(
        plans_topic(prefix), 1, copartitioned=False, config={"cleanup.policy": COMPACTED}
    )


class Unusable(StrEnum):
    """Why a published version cannot be used (a `leadscore_plan_reloads_total` result)."""

    INVALID = "invalid"
    NEWER_FORMAT = "newer-format"


class UnusableVersionError(ValueError):
    """A record of the plans topic that is not a version this leadscore can score with."""

    def __init__(self, reason: Unusable, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def encode_version(version: PlanVersion) -> tuple[bytes, bytes]:
    """The record's key and value; `version.effective_from` must be set (`installed_at`)."""
    if version.effective_from is None:
        raise ValueError("set the version's effective_from before publishing it")
    envelope = {
        "format": FORMAT,
        "version": version.label,
        "effective_from": format_time(version.effective_from),
        "change": version.change.value,
        "text": version.text,
    }
    return version.label.encode(), orjson.dumps(envelope)


def publish_time(now: float) -> float:
    """`now` cut to what an envelope can say (milliseconds), so the publisher's version and
    the one every worker decodes take over at the same instant."""
    return parse_time(format_time(now))


def decode_version(key: bytes | None, value: bytes, origin: str) -> PlanVersion:
    """A record's version, or `UnusableVersionError` saying why not (with `plans check`'s
    message for an invalid file)."""
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise _invalid(f"{origin}: not a JSON envelope: {error}") from None
    if not isinstance(envelope, dict):
        raise _invalid(f"{origin}: not a JSON object")
    fmt = envelope.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise _invalid(f"{origin}: no envelope format")
    if fmt > FORMAT:
        raise UnusableVersionError(
            Unusable.NEWER_FORMAT,
            f"{origin}: envelope format {fmt}, written by a newer leadscore (this one reads "
            f"up to {FORMAT}): upgrade the workers",
        )
    text = envelope.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{origin}: the envelope has no plans text")
    try:
        version = parse_plan_version(text, origin)
    except PlanError as error:
        raise _invalid(str(error)) from None
    if key is None or key.decode(errors="replace") != version.label:
        raise _invalid(f"{origin}: key {key!r} is not the version's label {version.label!r}")
    start = envelope.get("effective_from")
    if start is not None:
        try:
            moment = parse_time(start, "effective_from")
        except EventError as error:
            raise _invalid(f"{origin}: {error}") from None
        if version.effective_from is not None and version.effective_from != moment:
            raise _invalid(f"{origin}: the envelope's effective_from differs from the file's")
        version = replace(version, effective_from=moment)
    return version


def _invalid(message: str) -> UnusableVersionError:
    return UnusableVersionError(Unusable.INVALID, message)


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """One record of the plans topic: where it is, its key, its value (None: a tombstone)."""

    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def origin(self) -> str:
        """How messages name it: the label and offset."""
        label = "" if self.key is None else self.key.decode(errors="replace")
        return f"plans topic @{self.offset} ({label})"


class PlanTopicReader:
    """Reads the plans topic from the beginning without joining a group: every worker reads
    every version, and nothing is committed (the history is rebuilt at every start)."""

    def __init__(self, kafka: KafkaConnection, topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(
            kafka.librdkafka(
                {
                    "group.id": f"{topic}-reader",  # required by the client; never joined
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                }
            )
        )
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

    def exists(self, timeout: float = READ_TIMEOUT) -> bool:
        metadata = self._consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
        return metadata is not None and metadata.error is None

    def read_to_end(self, timeout: float = READ_TIMEOUT) -> list[PlanRecord]:
        """Every record up to the end offset taken now."""
        _, end = watermark(self._consumer, TopicPartition(self.topic, 0))
        records: list[PlanRecord] = []
        deadline = time.monotonic() + timeout
        while self._position() < end:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.topic}: could not read up to offset {end} within {timeout:.0f} s"
                )
            records.extend(self._records(self._consumer.consume(100, timeout=0.5)))
        return records

    def poll(self) -> list[PlanRecord]:
        """What was published since the last call, without waiting (librdkafka fetches in its
        own threads; this only takes what arrived)."""
        return list(self._records(self._consumer.consume(100, timeout=0)))

    def close(self) -> None:
        self._consumer.close()

    def _position(self) -> int:
        (position,) = self._consumer.position([TopicPartition(self.topic, 0)])
        offset: int = position.offset
        return 0 if offset in (OFFSET_BEGINNING, OFFSET_END) or offset < 0 else offset

    @staticmethod
    def _records(messages: list[Any]) -> Iterator[PlanRecord]:
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            yield PlanRecord(message.offset(), message.key(), message.value())
