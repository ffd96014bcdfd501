"""Topic administration: create what the worker needs, and refuse what would break it.

Faust routes a table key to the partition its source event came from, and the worker's
timer ticks must land on the partition that owns the contact. Both only hold while every
co-partitioned topic (input, ticks, changelog) has the same partition count, and a topic's
partition count cannot be changed without moving keys. So a mismatch stops the worker before
it consumes anything, with a message that says what to do, instead of scoring contacts on
the wrong partition.

The replication factor asked for is capped at the number of brokers (with a warning), and a
spec may ask for its config to be kept set on an existing topic too (`enforce_config`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import (  # admin does not re-export them to mypy
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)
from confluent_kafka.cimpl import NewTopic  # admin does not re-export it to mypy

from streams.kafka.security import KafkaConnection, as_connection

logger = logging.getLogger(__name__)

WATERMARK_TIMEOUT = 60.0
_TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)
"""What a topic created a moment ago answers until every broker knows its leader, and a group
asked for the first time until its coordinator is loaded."""
_T = TypeVar("_T")

USE_BROKER_DEFAULT = -1
"""Replication factor that lets the broker apply `default.replication.factor`."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic the worker needs; `copartitioned` topics must have exactly `partitions`."""

    name: str
    partitions: int
    copartitioned: bool = True
    config: Mapping[str, str] = field(default_factory=dict)
    enforce_config: bool = False
    """Also set `config` on the topic when it exists already (only where that cannot delete
    live data: the changelog's compaction settings, say, not another team's retention)."""


class TopicMismatchError(RuntimeError):
    """Existing topics whose partition count differs from what co-partitioning requires."""


def ensure_topics(
    kafka: str | KafkaConnection,
    specs: Sequence[TopicSpec],
    *,
    replication_factor: int = USE_BROKER_DEFAULT,
    timeout: float = 30.0,
) -> list[str]:
    """Create the missing topics, check the existing ones; return the names created.

    Idempotent: several workers may start at once, so a topic created by someone else between
    our look-up and our request counts as existing, and its partition count is checked too.
    """
    admin = AdminClient(as_connection(kafka).librdkafka())
    existing = _partition_counts(admin, timeout)
    missing = [spec for spec in specs if spec.name not in existing]
    created: list[str] = []
    if missing:
        replication_factor = _capped(admin, replication_factor, timeout)
        requests = [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                config=dict(spec.config),
            )
            for spec in missing
        ]
        for name, future in admin.create_topics(requests, request_timeout=timeout).items():
            try:
                future.result()
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            else:
                created.append(name)
        existing = _listed(admin, [spec.name for spec in specs], timeout)
    _check_partitions(specs, existing)
    _enforce_configs(admin, [s for s in specs if s.enforce_config and s.name not in created])
    return created


def _capped(admin: AdminClient, replication_factor: int, timeout: float) -> int:
    """At most one replica per broker: a one-broker development cluster would refuse a
    replication factor of 3, and a production cluster with 3 brokers must not get 1."""
    if replication_factor == USE_BROKER_DEFAULT:
        return replication_factor
    brokers = len(admin.list_topics(timeout=timeout).brokers)
    if 0 < brokers < replication_factor:
        logger.warning(
            "replication factor %d capped at %d: the cluster has only %d broker(s)",
            replication_factor,
            brokers,
            brokers,
        )
        return brokers
    return replication_factor


def _enforce_configs(admin: AdminClient, specs: Sequence[TopicSpec]) -> None:
    """Set on existing topics the config values that differ from their spec (incremental
    alter, so the topic's other settings stay as they are)."""
    if not specs:
        return
    described = admin.describe_configs([ConfigResource("TOPIC", spec.name) for spec in specs])
    current = {resource.name: future.result() for resource, future in described.items()}
    changes: dict[str, dict[str, str]] = {}
    for spec in specs:
        differ = {
            key: value
            for key, value in spec.config.items()
            if key not in current[spec.name] or current[spec.name][key].value != value
        }
        if differ:
            changes[spec.name] = differ
    if not changes:
        return
    requests = [
        ConfigResource(
            "TOPIC",
            name,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in differ.items()
            ],
        )
        for name, differ in changes.items()
    ]
    for resource, future in admin.incremental_alter_configs(requests).items():
        differ = changes[resource.name]
        try:
            future.result()
        except KafkaException as error:
            settings = ",".join(f"{key}={value}" for key, value in differ.items())
            raise TopicMismatchError(
                f"cannot set {settings} on topic {resource.name}: {error.args[0].str()}. "
                "Allow the worker to alter the topic's configs (ACL operation AlterConfigs), "
                f"or set them yourself: kafka-configs.sh --alter --entity-type topics "
                f"--entity-name {resource.name} --add-config {settings}"
            ) from None
        logger.info("topic %s: set %s", resource.name, differ)


def topic_ids(
    kafka: str | KafkaConnection, names: Sequence[str], timeout: float = 30.0
) -> dict[str, str]:
    """Each topic's id: a topic deleted and created again under the same name gets a new
    one, and its offsets start again at 0."""
    admin = AdminClient(as_connection(kafka).librdkafka())
    futures = admin.describe_topics(TopicCollection(list(names)), request_timeout=timeout)
    return {name: str(future.result().topic_id) for name, future in futures.items()}


def _partition_counts(admin: AdminClient, timeout: float) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout)
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None and topic.partitions
    }


def _listed(admin: AdminClient, names: Sequence[str], timeout: float) -> dict[str, int]:
    """Partition counts once metadata lists every topic: a topic just created (by us or by a
    worker starting at the same time) can be missing from metadata for a moment, and a check
    against a missing topic would pass by mistake."""
    deadline = time.monotonic() + timeout
    while True:
        existing = _partition_counts(admin, timeout)
        absent = [name for name in names if name not in existing]
        if not absent:
            return existing
        if time.monotonic() > deadline:
            raise TopicMismatchError(f"topics not visible in metadata after creation: {absent}")
        time.sleep(0.1)


def _check_partitions(specs: Sequence[TopicSpec], existing: Mapping[str, int]) -> None:
    wrong = [
        spec for spec in specs if spec.copartitioned and existing[spec.name] != spec.partitions
    ]
    if not wrong:
        return
    lines = [
        f"  {spec.name}: {existing[spec.name]} partitions, expected {spec.partitions}"
        for spec in wrong
    ]
    group = ", ".join(spec.name for spec in specs if spec.copartitioned)
    raise TopicMismatchError(
        "existing topics have the wrong partition count:\n"
        + "\n".join(lines)
        + f"\nThese topics are co-partitioned and must all have the same count ({group}). "
        "Start with --partitions set to the existing count, or delete and recreate the "
        "topics (their data is lost), or use another --topic-prefix."
    )


def watermarks(
    kafka: str | KafkaConnection,
    topic: str,
    partitions: Sequence[int],
    isolation: str = "read_committed",
) -> dict[int, tuple[int, int]]:
    """Each partition's (log start, end) offsets, retrying the answers of a topic created a
    moment ago; the consumer has a throwaway group and commits nothing. The end is where a
    reader of `isolation` stops: under `read_committed` (librdkafka's default) the last stable
    offset, before any open transaction; under `read_uncommitted` the log's end."""
    consumer = Consumer(
        as_connection(kafka).librdkafka(
            {
                "group.id": f"leadscore-watermarks-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
            }
        )
    )
    try:
        return {p: watermark(consumer, TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close()


def committed_offsets(
    kafka: str | KafkaConnection, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """The offsets `group` committed on `topic` (negative where none), without joining it.

    A consumer of the group asks, not `AdminClient.list_consumer_group_offsets`: librdkafka
    2.16 crashes the process when that meets NOT_COORDINATOR, which a group asked for the
    first time gets while its coordinator loads (librdkafka #5040). The consumer's answer is
    an error then, retried here."""
    consumer = Consumer(
        as_connection(kafka).librdkafka({"group.id": group, "enable.auto.commit": False})
    )
    asked = [TopicPartition(topic, p) for p in partitions]
    try:
        found = _retrying(lambda: consumer.committed(asked, timeout=WATERMARK_TIMEOUT))
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def watermark(consumer: Consumer, partition: TopicPartition) -> tuple[int, int]:
    """One partition's (log start, end) with `consumer`, retried as `watermarks` does."""
    low, high = _retrying(
        lambda: consumer.get_watermark_offsets(partition, timeout=WATERMARK_TIMEOUT)
    )
    return int(low), int(high)


def _retrying(ask: Callable[[], _T]) -> _T:
    """`ask()`, again while the answer is an error a new topic or group gives for a while."""
    deadline = time.monotonic() + WATERMARK_TIMEOUT
    while True:
        try:
            return ask()
        except KafkaException as error:
            failure: KafkaError = error.args[0]
            transient = failure.retriable() or failure.code() in _TRANSIENT
            if not transient or time.monotonic() > deadline:
                raise
        time.sleep(0.1)
