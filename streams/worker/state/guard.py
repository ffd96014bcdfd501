"""Checks that the contact state still belongs to the topics it was built from, before Faust
starts.

Two ways state and topics silently part, and what is checked for each:

- **The input topic was deleted and created again** while its changelog lives on. The new
  topic's offsets start at 0, every contact record remembers the offset of the last event
  applied to it, so every new event below that looks already applied: silent loss. Kafka gives
  every topic an id that a re-created topic does not share. The id of the input topic is
  written into each changelog partition (key `m` + `input-topic`, as the first record of a
  new changelog), so whoever reads the changelog, a fresh worker with an empty data dir
  included, finds the id the state was built from; a different id stops the worker.
- **The broker lost its data while the data dir persisted** (`docker compose down` then `up`
  with a volume for the worker only). Each local partition database remembers the changelog
  offset it was written up to; above the changelog's end, the local state comes from a log
  that no longer exists, and Faust's recovery raises `ConsistencyError` at every start. Here
  it is told in one message, with the way out: `--reset-state`, which deletes the local state
  (never automatically) so that it is rebuilt from the changelog.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from faust.stores.rocksdb import Store
from rocksdict import AccessType, Options, Rdict

from streams.kafka.admin import topic_ids, watermarks
from streams.kafka.security import KafkaConnection, as_connection
from streams.worker.state.store import meta_key

logger = logging.getLogger(__name__)

INPUT_TOPIC = meta_key("input-topic")
"""Changelog key of the input topic's name and id."""
READ_TIMEOUT = 60.0


class StateMismatchError(RuntimeError):
    """The state does not belong to the topics it would be applied to; the message says what
    happened and what to do."""


@dataclass(frozen=True, slots=True)
class StateTopics:
    """What the checks compare: the input topic, the changelog, and where the local state is."""

    input_topic: str
    changelog: str
    partitions: int
    tabledir: Path
    table: str

    def local_databases(self) -> dict[int, Path]:
        """The partition databases in the data dir (Faust names them `<table>-<n>.db`)."""
        found: dict[int, Path] = {}
        for path in self.tabledir.glob(f"{self.table}-*.db"):
            number = path.name[len(self.table) + 1 : -len(".db")]
            if number.isdigit():
                found[int(number)] = path
        return found


def check_state(kafka: str | KafkaConnection, topics: StateTopics) -> None:
    """Raise `StateMismatchError` when the local state is ahead of the changelog, or the
    changelog was built from another input topic; record the input topic's id where the
    changelog has none yet. `kafka` says where the cluster is and how to get in."""
    check_local_offsets(kafka, topics)
    check_input_topic(kafka, topics)


def check_local_offsets(kafka: str | KafkaConnection, topics: StateTopics) -> None:
    """The local databases must not be ahead of the changelog's end (Faust's consistency
    check, made before Faust starts and explained)."""
    local = {
        p: offset
        for p, path in topics.local_databases().items()
        if (offset := _persisted_offset(path)) is not None
    }
    if not local:
        return
    # The log's end, not the last stable offset: a transaction a crashed worker left open
    # holds that back until the broker aborts it, below what this state was written up to.
    ends = watermarks(kafka, topics.changelog, sorted(local), "read_uncommitted")
    ahead = {p: (offset, ends[p][1]) for p, offset in local.items() if offset >= ends[p][1]}
    if not ahead:
        return
    lines = [
        f"  partition {p}: local state written up to offset {offset}, the changelog ends at {end}"
        for p, (offset, end) in sorted(ahead.items())
    ]
    raise StateMismatchError(
        f"the local state in {topics.tabledir} is ahead of changelog {topics.changelog}:\n"
        + "\n".join(lines)
        + "\nThe broker no longer has the data this state was built from: it was reset or "
        "replaced (docker compose down with no volume for Kafka does that), or the changelog "
        "was deleted. If this is the cluster you mean to use, start once with --reset-state: "
        "it deletes the local state and rebuilds it from the changelog (contacts that are "
        "not in the changelog start from empty). Otherwise point --bootstrap at the cluster "
        "the state belongs to."
    )


def check_input_topic(kafka: str | KafkaConnection, topics: StateTopics) -> None:
    """Every changelog partition must name the input topic's current id; partitions that
    name none get it now (a new changelog: as their first record)."""
    current = topic_ids(kafka, [topics.input_topic])[topics.input_topic]
    recorded = _recorded_ids(kafka, topics.changelog, topics.partitions)
    other = {p: value for p, value in recorded.items() if value != current}
    if other:
        partitions = ", ".join(str(p) for p in sorted(other))
        raise StateMismatchError(
            f"input topic {topics.input_topic} was deleted and created again: its topic id "
            f"is now {current}, but the state in changelog {topics.changelog} (partitions "
            f"{partitions}) was built from topic id {sorted(set(other.values()))[0]}. The new "
            "topic's offsets start again at 0, and the state would take its events for ones "
            "already applied. Start with a new --app-id (a new consumer group and changelog; "
            f"scores start from empty), or delete changelog {topics.changelog} and the "
            "worker's data dir to rebuild the state from the new topic."
        )
    missing = [p for p in range(topics.partitions) if p not in recorded]
    if missing:
        _record_id(kafka, topics, current, missing)


def reset_state(topics: StateTopics) -> list[Path]:
    """Delete the local partition databases (`--reset-state`); Faust rebuilds them from the
    changelog when the partitions are assigned. Returns what was deleted."""
    deleted = sorted(topics.local_databases().values())
    for path in deleted:
        shutil.rmtree(path)
        logger.warning("--reset-state: deleted %s; it is rebuilt from the changelog", path)
    return deleted


def _persisted_offset(path: Path) -> int | None:
    """The changelog offset Faust resumes after, as the worker's store writes it."""
    db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        raw = db.get(Store.offset_key)
    finally:
        db.close()
    return None if raw is None else int(raw)


def _consumer(kafka: str | KafkaConnection) -> Consumer:
    return Consumer(
        as_connection(kafka).librdkafka(
            {
                "group.id": f"leadscore-state-guard-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )


def _recorded_ids(kafka: str | KafkaConnection, changelog: str, partitions: int) -> dict[int, str]:
    """The input topic id recorded in each changelog partition, reading each from its start
    until the record is found (it is the first record of a changelog this version began)."""
    consumer = _consumer(kafka)
    found: dict[int, str] = {}
    try:
        pending = set(range(partitions))
        consumer.assign([TopicPartition(changelog, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + READ_TIMEOUT
        while pending:
            if time.monotonic() > deadline:
                raise KafkaException(
                    KafkaError(KafkaError._TIMED_OUT, f"reading {changelog} for its input topic")
                )
            for message in consumer.consume(1000, timeout=0.1):
                partition = cast(int, message.partition())
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                elif error is not None:
                    raise KafkaException(error)
                elif partition in pending and message.key() == INPUT_TOPIC:
                    found[partition] = json.loads(cast(bytes, message.value()))["id"]
                    pending.discard(partition)
                    consumer.incremental_unassign([TopicPartition(changelog, partition)])
    finally:
        consumer.close()
    return found


def _record_id(
    kafka: str | KafkaConnection, topics: StateTopics, topic_id: str, partitions: list[int]
) -> None:
    value = json.dumps({"topic": topics.input_topic, "id": topic_id}).encode()
    producer = Producer(as_connection(kafka).librdkafka())
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, _: object) -> None:
        if error is not None:
            errors.append(error)

    for partition in partitions:
        producer.produce(
            topics.changelog,
            value=value,
            key=INPUT_TOPIC,
            partition=partition,
            on_delivery=delivered,
        )
    if producer.flush(READ_TIMEOUT):
        errors.append(KafkaError(KafkaError._TIMED_OUT, "recording the input topic id"))
    if errors:
        raise KafkaException(errors[0])
    logger.info(
        "recorded input topic %s (id %s) in %s partitions %s",
        topics.input_topic,
        topic_id,
        topics.changelog,
        partitions,
    )
