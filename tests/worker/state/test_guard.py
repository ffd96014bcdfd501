"""State that cannot silently part from its topics: a re-created input topic, a broker that
lost its data under a persisted data dir, and erased contacts compacted out of the changelog."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.scoring import decode_state
from streams.worker.commands.run import EXIT_STATE
from streams.worker.runtime.topic_settings import changelog_config
from streams.worker.state.guard import (
    INPUT_TOPIC,
    StateMismatchError,
    StateTopics,
    check_state,
)
from streams.worker.state.store import contact_key, record_state
from tests.support import attributes, event
from tests.worker.conftest import StartWorker
from tests.worker.harness import WorkerProcess, new_prefix, publish, wait_until
from tests.worker.lead_table import assert_lead_scores_match
from tests.worker.test_examples import _warm_events

pytestmark = pytest.mark.integration

EXIT_TIMEOUT = 60.0


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, request_timeout=30).values():
        future.result()

    def gone() -> bool:
        listed = admin.list_topics(timeout=10).topics
        return not any(name in listed for name in names)

    wait_until(gone, 30, f"topics {names} to be deleted")


def _read(bootstrap: str, topic: str, partition: int = 0) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) of a partition, from its start to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        records: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                return records  # end of partition
            records.append((message.key(), message.value() or b""))
        raise AssertionError(f"could not read {topic}[{partition}] to its end")
    finally:
        consumer.close()


def _exit_code(worker: WorkerProcess) -> int:
    assert worker.process is not None
    return worker.process.wait(EXIT_TIMEOUT)


def test_check_records_the_input_topic_id_and_refuses_it_recreated(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = new_prefix()
    topics = StateTopics(f"{prefix}events", f"{prefix}changelog", 2, tmp_path, "contacts")
    config = kafka_bootstrap
    specs = [
        TopicSpec(topics.input_topic, 2),
        TopicSpec(topics.changelog, 2, config=changelog_config(86400)),
    ]
    ensure_topics(kafka_bootstrap, specs)
    check_state(config, topics)
    check_state(config, topics)  # the same topic: nothing to say, nothing written again
    for partition in (0, 1):
        assert [key for key, _ in _read(kafka_bootstrap, topics.changelog, partition)] == [
            INPUT_TOPIC
        ]

    _delete_topics(kafka_bootstrap, [topics.input_topic])
    ensure_topics(kafka_bootstrap, specs)
    with pytest.raises(StateMismatchError) as raised:
        check_state(config, topics)
    message = str(raised.value)
    assert f"input topic {topics.input_topic} was deleted and created again" in message
    assert "partitions 0, 1" in message
    assert "--app-id" in message


def _scored_and_stopped(start_worker: StartWorker, bootstrap: str) -> tuple[WorkerProcess, str]:
    """A worker that scored one contact (110 points) and stopped cleanly; and the contact."""
    worker = start_worker("first", partitions=2)
    contact = f"c-{uuid.uuid4().hex[:8]}"
    publish(bootstrap, worker.topics.events, _warm_events(contact))
    wait_until(lambda: worker.score(contact) == 110, 60, "the contact to be scored")
    assert worker.stop() == 0
    return worker, contact


def test_a_fresh_worker_refuses_a_changelog_built_from_a_recreated_input_topic(
    kafka_bootstrap: str, start_worker: StartWorker
) -> None:
    first, _ = _scored_and_stopped(start_worker, kafka_bootstrap)

    _delete_topics(kafka_bootstrap, [first.topics.events])  # the worker creates it again
    second = start_worker("second", prefix=first.prefix, partitions=2, wait_ready=False)
    assert _exit_code(second) == EXIT_STATE, second.log()
    log = second.log()
    assert f"input topic {first.topics.events} was deleted and created again" in log
    assert "Start with a new --app-id" in log


def test_a_broker_reset_under_a_persisted_data_dir_is_explained_then_reset_state_recovers(
    kafka_bootstrap: str, start_worker: StartWorker
) -> None:
    worker, before = _scored_and_stopped(start_worker, kafka_bootstrap)

    # What a new, empty broker looks like to the worker: none of its topics exist.
    topics = worker.topics
    changelog = f"{worker.prefix}leadscore-contacts-changelog"
    every = [topics.events, topics.ticks, changelog, topics.alerts, topics.updates]
    _delete_topics(kafka_bootstrap, [*every, topics.dead_letters])

    refused = start_worker("first", prefix=worker.prefix, partitions=2, wait_ready=False)
    assert _exit_code(refused) == EXIT_STATE, refused.log()
    log = refused.log()
    assert f"is ahead of changelog {changelog}" in log
    assert "start once with --reset-state" in log
    assert "ConsistencyError" not in log
    again = start_worker("first", prefix=worker.prefix, partitions=2, wait_ready=False)
    assert _exit_code(again) == EXIT_STATE  # every start, until someone decides

    reset = start_worker("first", prefix=worker.prefix, partitions=2, extra_args=["--reset-state"])
    after = f"c-{uuid.uuid4().hex[:8]}"
    publish(kafka_bootstrap, topics.events, _warm_events(after))
    wait_until(lambda: reset.score(after) == 110, 60, "a new contact to be scored")
    assert reset.contact(before)[0] == 404  # the lost broker's state is gone, not resurrected


def test_an_erased_contact_leaves_the_changelog_within_the_bound(
    kafka_bootstrap: str, start_worker: StartWorker
) -> None:
    bound = 4.0
    worker = start_worker(partitions=1, extra_args=["--erasure-bound", str(bound)])
    changelog = f"{worker.prefix}leadscore-contacts-changelog"
    contact, city = f"c-{uuid.uuid4().hex[:8]}", f"city-{uuid.uuid4().hex}"
    personal = city.encode()
    publish(kafka_bootstrap, worker.topics.events, [attributes(0, contact, city=city)])
    wait_until(
        lambda: any(personal in value for _, value in _read(kafka_bootstrap, changelog)),
        60,
        "the contact's attributes in the changelog",
    )

    publish(kafka_bootstrap, worker.topics.events, [event("contact.erased", 60, contact=contact)])
    erased = time.monotonic()
    wait_until(lambda: worker.contact(contact)[0] == 404, 60, "the erasure to be applied")

    def _published(contact: str) -> list[bytes]:
        """The contact's lead-scores values, oldest first (b"" for a tombstone)."""
        return [v for k, v in _read(kafka_bootstrap, worker.topics.leads) if k == contact.encode()]

    assert _published(contact)[-1] == b""  # the tombstone, at the same commit
    filler = iter(range(1_000_000))

    def compacted() -> bool:
        # Traffic from other contacts, as on a live partition: Kafka rolls the active
        # segment, which the cleaner never compacts, only at a write.
        publish(
            kafka_bootstrap,
            worker.topics.events,
            [event("email.opened", 120 + next(filler), contact=f"filler-{contact}")],
        )
        return not any(
            personal in value for _, value in _read(kafka_bootstrap, changelog)
        ) and _published(contact) == [b""]

    # The bound counts from the erasure record in the changelog: it gets there at the
    # worker's next commit (Faust commits every 2.8 s); then the cleaner's turn and work.
    wait_until(
        compacted, bound + 10, "the erased contact's attributes and scores to be compacted away"
    )
    print(f"compacted {time.monotonic() - erased:.1f} s after the erasure (bound {bound} s)")
    records = [
        value for key, value in _read(kafka_bootstrap, changelog) if key == contact_key(contact)
    ]
    state = decode_state(record_state(records[-1]))
    assert state.erased_at is not None
    assert (state.attributes, state.plans, state.seen) == ({}, {}, b"")
    # lead-scores compacted with the changelog (the wait above): the contact's scores went,
    # its tombstone stays for the sinks still to read it, and the table rebuilt from what is
    # left equals the worker's answers.
    assert_lead_scores_match(worker, kafka_bootstrap, {contact, f"filler-{contact}"})
