"""`leadscore plans publish`: put a plans file on the plans topic, for the workers that follow it.

The file is checked first, with `plans check`'s messages: an invalid file writes nothing. Then
the topic is read, so that what every worker would refuse is refused here, before it is
written: a version taking over earlier than the latest one published, or a label already
published with other content (publishing the same file twice writes nothing and says so).
A file without `effective_from` takes over at the publish time, written into the record, so
every worker switches at the same instant whenever it reads it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from confluent_kafka import KafkaException

from streams.kafka.admin import ensure_topics
from streams.kafka.client import KeyedProducer, PublishError
from streams.kafka.security import KafkaAccessError, KafkaConnection, verify_access
from streams.models.plan_file import PlanError
from streams.models.plan_versions import PlanVersion, load_plan_version
from streams.models.times import format_time
from streams.worker.commands.run import ACCESS_TIMEOUT, EXIT_KAFKA, EXIT_USAGE
from streams.worker.plans.topic import (
    PlanTopicReader,
    UnusableVersionError,
    decode_version,
    encode_version,
    plans_topic_spec,
    publish_time,
)
from streams.worker.settings import (
    CLIENT_OPTIONS,
    SettingsError,
    add_arguments,
    resolve_client,
    setting_name,
)

PUBLISH_TIMEOUT = 30.0
KAFKA_ERRORS = (KafkaAccessError, KafkaException, PublishError, TimeoutError)
"""Kafka refused, did not answer, or did not acknowledge the record (exit 4)."""


class PublishRefusedError(ValueError):
    """The version conflicts with what the topic holds; nothing was written."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `publish` to `leadscore plans`."""
    publish = commands.add_parser(
        "publish",
        help="publish a plans file to the plans topic the workers follow",
        description="Validate the file, then write it to <topic-prefix>leadscore-plans "
        "(created if absent: compacted, one partition) and print its version. Workers started "
        "with --plans-topic switch to it at its effective_from (default: now). Options take "
        "the worker's flags and variables.",
    )
    publish.add_argument("plans_file", type=Path)
    add_arguments(publish, CLIENT_OPTIONS)
    publish.add_argument(
        "--replication-factor",
        type=int,
        default=3,
        help="replicas of the plans topic if it is created (capped at the number of brokers)",
    )
    publish.set_defaults(handler=run_publish)


def run_publish(args: argparse.Namespace) -> int:
    """Exit codes as the worker's: 2 an invalid file or a refused version, 4 Kafka."""
    try:
        version = load_plan_version(args.plans_file)  # before anything connects
        settings = resolve_client(args)
        verify_access(settings.kafka, ACCESS_TIMEOUT, setting_name)
        written = publish_version(
            settings.kafka, settings.prefix, version, time.time(), args.replication_factor
        )
    except PlanError as error:
        print(f"leadscore: invalid plans: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (SettingsError, PublishRefusedError, *KAFKA_ERRORS) as error:
        print(f"leadscore plans publish: {error}", file=sys.stderr)
        return EXIT_KAFKA if isinstance(error, KAFKA_ERRORS) else EXIT_USAGE
    if written is None:
        print(f"{version.label} (already published; nothing written)")
    else:
        start = format_time(written.effective_from or 0.0)
        print(f"{written.label} ({written.change.value} from {start})")
    return 0


def publish_version(
    kafka: KafkaConnection,
    prefix: str,
    version: PlanVersion,
    now: float,
    replication_factor: int = 3,
) -> PlanVersion | None:
    """Write `version` (taking over at `now` unless it says when); the version written, or
    None when the topic already holds it. `PublishRefusedError` when a worker would refuse it."""
    spec = plans_topic_spec(prefix)
    ensure_topics(kafka, [spec], replication_factor=replication_factor)
    version = version.installed_at(publish_time(now))
    reader = PlanTopicReader(kafka, spec.name)
    try:
        records = reader.read_to_end(PUBLISH_TIMEOUT)
    finally:
        reader.close()
    latest: PlanVersion | None = None
    for record in records:
        if record.value is None:
            continue
        try:
            published = decode_version(record.key, record.value, record.origin)
        except UnusableVersionError:
            continue  # every worker skips it too
        if published.label == version.label:
            if published.text == version.text:
                return None
            raise PublishRefusedError(
                f"version {version.label} is already published with other content: give the "
                "file its own `version:` (or remove it to get a hash of the content); "
                "nothing written"
            )
        if latest is None or _start(published) >= _start(latest):  # what workers install
            latest = published
    if latest is not None and _start(version) < _start(latest):
        raise PublishRefusedError(
            f"{version.describe()} takes over before the latest published "
            f"{latest.describe()}: set a later effective_from; nothing written"
        )
    _produce(kafka, spec.name, *encode_version(version))
    return version


def _start(version: PlanVersion) -> float:
    """Set for every version read from the topic or defaulted by `installed_at`."""
    assert version.effective_from is not None
    return version.effective_from


def _produce(kafka: KafkaConnection, topic: str, key: bytes, value: bytes) -> None:
    producer = KeyedProducer(kafka)
    producer.produce(topic, key, value, [], 0)
    producer.flush(PUBLISH_TIMEOUT)
