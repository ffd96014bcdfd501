"""Producers that partition with librdkafka's default (CRC32) and with murmur2, on the same
contacts: the worker's results equal a plain replay, and every contact can be looked up.

The producers take turns over four slices of the simulated stream's time, and each slice is
fully consumed before the next is published: Kafka orders nothing across partitions, so a
contact's event that is re-routed could otherwise be scored after a later one sent straight
to the right partition, and alerts (which depend on the order of a contact's events) would
differ from the replay's for a reason that has nothing to do with re-routing. For the same
reason the plans have no time rules: stream time on a partition is the largest event time
consumed there, from the input and the rerouted topic alike, and forwards arrive after the
events published with them. A contact still gets events from both producers.

A worker killed with -9 while forwards are in flight forwards them again after its restart;
the copies must change nothing, however many of the contact's events came in between.

The last test lets both producers publish at once, so a re-routed event does arrive after
its contact's later events, into windowed limits that are full: with the worker's window for
late events (`--lateness`), every final score still equals the backtest's.
"""

from __future__ import annotations

import signal
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.backtest.replay import replay
from streams.backtest.simulate import generate
from streams.kafka.client import EventPublisher, binary_message
from streams.kafka.partitioning import partition_for
from streams.models.events import TrackingEvent
from streams.scoring import Outcome, PlanSet, load_plans
from streams.scoring.state import WINDOW_LIMIT
from tests.worker.conftest import StartWorker
from tests.worker.expected import Scores, differences, expected_outcome, scores_from_updates
from tests.worker.harness import TopicReader, WorkerProcess, http_get, wait_until
from tests.worker.test_replay_equivalence import assert_matches_replay

pytestmark = pytest.mark.integration

PARTITIONS = 6
CONTACTS = 300
EVENTS = 4000
SLICES = 4
PLANS_WITHOUT_TIME_RULES = """
plans:
  - name: lead-score
    thresholds: [{name: warm, score: 100}, {name: hot, score: 200}]
    rules:
      - {id: opened,  when: {type: email.opened},  points: 10, limit: {count: 5, per: 1d}}
      - {id: clicked, when: {type: email.clicked}, points: 20}
      - {id: replied, when: {type: email.replied}, points: 30}
      - {id: pricing, when: {type: page.visited, data: {url: {glob: "*/pricing*"}}}, points: 50}
      - {id: unsubscribed, when: {type: list.unsubscribed}, reset: true}
  - name: icp-fit
    thresholds: [{name: sales-ready, score: 15}]
    attributes:
      - {id: president, attribute: job_title, in: [president, prezes], points: 10}
      - {id: region, attribute: region, equals: Małopolskie, points: 5}
      - {id: city, attribute: city, equals: Kraków, points: 6}
      - {id: via-form, attribute: source, equals: form, points: 3}
      - {id: consent, attribute: consent_email, equals: true, points: 2}
"""


def librdkafka_default_partition(key: bytes) -> int:
    """Where librdkafka's default partitioner (`consistent_random`) puts a non-empty key."""
    return zlib.crc32(key) % PARTITIONS


def publish_with_default_partitioner(
    bootstrap: str, topic: str, events: list[TrackingEvent]
) -> None:
    """A confluent-kafka producer as most non-Java teams run it: no `partitioner` setting."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for event in events:
        key, value, headers = binary_message(event)
        producer.produce(topic, value=value, key=key, headers=headers)  # type: ignore[arg-type]
    assert producer.flush(60) == 0


def wait_consumed(worker: WorkerProcess, count: int) -> None:
    wait_until(lambda: worker.consumed() >= count, 90, f"{count} events to be consumed")


def rerouted_and_duplicates(worker: WorkerProcess) -> tuple[float, float]:
    metrics = worker.metrics()
    return metrics.get("leadscore_events_rerouted_total", 0.0), worker.consumed("duplicate")


def assert_forwards_name_their_origin(rerouted: TopicReader, topic: str) -> None:
    """Each forward is on its key's partition, with where it was consumed in its headers."""
    for message in rerouted.catch_up():
        headers = dict(message.headers())
        key = message.key()
        assert headers["ce_subject"] == key
        assert message.partition() == partition_for(key, PARTITIONS)
        assert headers["leadscore.rerouted.topic"] == topic.encode()
        assert int(headers["leadscore.rerouted.partition"]) == librdkafka_default_partition(key)
        assert int(headers["leadscore.rerouted.offset"]) >= 0


def assert_every_contact_answers(worker: WorkerProcess, expected: Scores, plans: PlanSet) -> None:
    wrong = []
    for contact_id in sorted({contact for contact, _ in expected}):
        status, body = http_get(f"{worker.url}/contacts/{contact_id}")
        if status != 200:
            wrong.append(f"{contact_id}: {status}")
            continue
        for plan in plans:
            got, want = body["plans"][plan.name]["score"], expected[(contact_id, plan.name)]
            if got != want:
                wrong.append(f"{contact_id}/{plan.name}: {got}, expected {want}")
    assert not wrong, f"{worker.url}: {len(wrong)} wrong look-ups, first: {wrong[:5]}"


def test_mixed_producers_score_like_the_backtest_and_every_contact_answers(
    start_worker: StartWorker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    plans_path = tmp_path / "plans.yaml"
    plans_path.write_text(PLANS_WITHOUT_TIME_RULES)
    plans = load_plans(plans_path)
    first = start_worker(name="first", partitions=PARTITIONS, plans=plans_path)
    topic = first.topics.events
    events = list(generate(CONTACTS, EVENTS, seed=31))
    size = -(-len(events) // SLICES)
    slices = [events[start : start + size] for start in range(0, len(events), size)]

    misplaced = 0
    producers: defaultdict[str, set[bool]] = defaultdict(set)
    for number, chunk in enumerate(slices):
        crc32 = number % 2 == 1
        if crc32:
            publish_with_default_partitioner(kafka_bootstrap, topic, chunk)
            misplaced += sum(
                librdkafka_default_partition(e.contact_id.encode())
                != partition_for(e.contact_id.encode(), PARTITIONS)
                for e in chunk
            )
        else:
            with EventPublisher(kafka_bootstrap, topic) as publisher:
                for event in chunk:
                    publisher.publish(event)
        for event in chunk:
            producers[event.contact_id].add(crc32)
        wait_consumed(first, size * number + len(chunk))
    mixed = sum(len(used) == 2 for used in producers.values())
    assert misplaced > len(events) // 4 and mixed > CONTACTS // 2, (misplaced, mixed)

    assert_matches_replay(first, kafka_bootstrap, events, plans)
    expected_scores, _ = expected_outcome(events, plans)
    expected_duplicates = replay(events, plans).outcomes[Outcome.DUPLICATE]
    assert rerouted_and_duplicates(first) == (misplaced, expected_duplicates)
    assert_forwards_name_their_origin(TopicReader(kafka_bootstrap, first.topics.rerouted), topic)
    assert_every_contact_answers(first, expected_scores, plans)

    second = start_worker(
        name="second", prefix=first.prefix, partitions=PARTITIONS, plans=plans_path
    )
    workers = (first, second)

    def split() -> bool:
        answers = [http_get(worker.url + "/readyz") for worker in workers]
        if any(status != 200 for status, _ in answers):
            return False
        owned = [set(body["partitions"]) for _, body in answers]
        return all(owned) and owned[0] | owned[1] == set(range(PARTITIONS))

    wait_until(split, 120, "both workers to own partitions")
    for worker in workers:
        assert_every_contact_answers(worker, expected_scores, plans)


def test_kill_9_while_re_routing_loses_and_doubles_nothing(
    start_worker: StartWorker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Killed with forwards sent but their input offsets not committed: the restarted worker
    forwards those events again, and the copies change nothing (same `(source, id)`)."""
    plans_path = tmp_path / "plans.yaml"
    plans_path.write_text(PLANS_WITHOUT_TIME_RULES)
    plans = load_plans(plans_path)
    worker = start_worker(partitions=PARTITIONS, plans=plans_path)
    events = list(generate(CONTACTS, 2 * EVENTS, seed=37))
    publish_with_default_partitioner(kafka_bootstrap, worker.topics.events, events)
    wait_until(
        lambda: rerouted_and_duplicates(worker)[0] >= len(events) // 5, 60, "forwards to flow"
    )
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    worker.start()

    assert_matches_replay(worker, kafka_bootstrap, events, plans)
    expected_scores, _ = expected_outcome(events, plans)
    assert_every_contact_answers(worker, expected_scores, plans)


WINDOWED_LIMITS = """
plans:
  - name: capped
    thresholds: [{name: warm, score: 60}]
    rules:
      - {id: opened,  when: {type: email.opened},  points: 10, limit: {count: 2, per: 1d}}
      - {id: clicked, when: {type: email.clicked}, points: 20, limit: {count: 1, per: 12h}}
      - {id: pricing, when: {type: page.visited, data: {url: {glob: "*/pricing*"}}}, points: 50, limit: {count: 1, per: 2d}}
      - {id: replied, when: {type: email.replied}, points: 30, limit: {count: 3}}
"""


def test_re_routed_events_late_into_full_windows_score_like_the_backtest(
    start_worker: StartWorker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Every contact's events alternate between a murmur2 and a CRC32 producer publishing at
    the same time over five days of event time, so the windows of 12 h to 2 d fill up and the
    forwarded half of a contact's events arrives behind the other half."""
    plans_path = tmp_path / "plans.yaml"
    plans_path.write_text(WINDOWED_LIMITS)
    plans = load_plans(plans_path)
    # Published in a burst, five days of event time pass in about a second: the forwards come
    # days behind in event time, where a real stream has them seconds behind. The window must
    # cover how late events come, measured in event time.
    lateness = ("--lateness", "7d")
    worker = start_worker(partitions=PARTITIONS, plans=plans_path, extra_args=lateness)
    events = list(generate(600, 3000, seed=41, days=5))
    busiest = max(Counter(event.contact_id for event in events).values())
    assert busiest <= WINDOW_LIMIT  # every late event finds its place in its contact's window
    direct = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    crc32 = Producer({"bootstrap.servers": kafka_bootstrap})
    for number, event in enumerate(events):
        key, value, headers = binary_message(event)
        producer = crc32 if number % 2 else direct
        producer.produce(worker.topics.events, value=value, key=key, headers=headers)  # type: ignore[arg-type]
    assert direct.flush(60) == 0 and crc32.flush(60) == 0

    assert_matches_scores(worker, kafka_bootstrap, events, plans)
    assert rerouted_and_duplicates(worker)[0] > len(events) // 5
    expected_scores, _ = expected_outcome(events, plans)
    assert_every_contact_answers(worker, expected_scores, plans)


def assert_matches_scores(
    worker: WorkerProcess, bootstrap: str, events: list[TrackingEvent], plans: PlanSet
) -> None:
    """The last score per contact and plan on score-updates equals the replay's. Alert ids are
    not compared: a late event's alert is caused by the late event, not by the one the replay
    saw cross the threshold."""
    expected_scores, _ = expected_outcome(events, plans)
    updates = TopicReader(bootstrap, worker.topics.updates)

    def matches() -> bool:
        return not differences(expected_scores, scores_from_updates(updates.values(), plans))

    try:
        wait_until(matches, 120, "the worker's scores to equal the replay's", 1.0)
    except AssertionError:
        found = differences(expected_scores, scores_from_updates(updates.values(), plans))
        pytest.fail(f"{len(found)} scores differ from the replay, first: {found[:5]}")
