"""Running the worker: start-up checks, metrics, several workers, and a bug in the core."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.client import EventPublisher
from streams.models.events import TrackingEvent
from streams.scoring import load_plans
from streams.worker.flow.dead_letters import DLQ_HEADER
from streams.worker.web.metrics import INVALID_TYPE, OTHER_TYPE
from tests.support import BOOM, T0, attributes, event
from tests.worker.conftest import StartWorker
from tests.worker.expected import expected_outcome
from tests.worker.failing_worker import CRASH, CRASH_EXIT_CODE
from tests.worker.harness import (
    EXAMPLE_PLANS,
    REPO,
    TopicReader,
    WorkerProcess,
    http_get,
    new_prefix,
    publish,
    series,
    wait_until,
)
from tests.worker.lead_table import assert_lead_scores_match
from tests.worker.test_examples import ICP_ATTRIBUTES, _warm_events


def test_invalid_plans_stop_the_worker_before_it_touches_kafka(tmp_path: Path) -> None:
    plans = tmp_path / "plans.yaml"
    plans.write_text(
        "plans:\n  - name: p\n    rules:\n"
        "      - {id: r, when: {type: email.opened}, points: 1, limit: {count: 2, per: soon}}\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.worker",
            "--plans",
            str(plans),
            "--bootstrap",
            "127.0.0.1:9",
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(plans) in result.stderr
    assert "plans[0].rules[0].limit.per" in result.stderr


@pytest.mark.integration
def test_a_topic_with_the_wrong_partition_count_stops_the_worker(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    prefix = new_prefix()
    ensure_topics(kafka_bootstrap, [TopicSpec(f"{prefix}tracking-events", 2)])
    worker = start_worker(prefix=prefix, partitions=3, wait_ready=False)
    assert worker.process is not None
    assert worker.process.wait(60) == 3
    assert f"{prefix}tracking-events: 2 partitions, expected 3" in worker.log()


@pytest.mark.integration
def test_metrics_count_what_was_sent(start_worker: StartWorker, kafka_bootstrap: str) -> None:
    worker = start_worker()
    warm = _warm_events("m-warm")
    valid = [
        *warm,
        attributes(300, "m-fit", **ICP_ATTRIBUTES),
        event("custom.thing", 400, contact="m-other"),
    ]
    with EventPublisher(kafka_bootstrap, worker.topics.events) as publisher:
        for item in valid:
            publisher.publish(item)
        publisher.publish(warm[0])  # a duplicate
        publisher.publish_raw(b"m-bad", b"{not json", [])
        publisher.publish_raw(b"m-bad", b'{"specversion": "1.0", "time": "soon"}', [])
    wait_until(lambda: worker.consumed() == len(valid) + 3, 60, "every message consumed")
    wait_until(lambda: worker.metrics()["leadscore_contacts"] == 3, 30, "the contact count")
    updates = len(TopicReader(kafka_bootstrap, worker.topics.updates).catch_up())
    alerts = len(TopicReader(kafka_bootstrap, worker.topics.alerts).catch_up())
    metrics = worker.metrics()

    def total(prefix: str) -> float:
        return sum(value for name, value in metrics.items() if name.startswith(prefix))

    consumed = "leadscore_events_consumed_total"
    for kind in ("email.opened", "email.clicked", "email.replied", "page.visited"):
        assert metrics[series(consumed, type=kind, outcome="applied")] == 1
    assert metrics[series(consumed, type="contact.updated", outcome="applied")] == 1
    assert metrics[series(consumed, type=OTHER_TYPE, outcome="applied")] == 1
    assert metrics[series(consumed, type="email.opened", outcome="duplicate")] == 1
    assert metrics[series(consumed, type=INVALID_TYPE, outcome="dead_lettered")] == 2
    dead = "leadscore_events_dead_lettered_total"
    assert metrics[series(dead, reason="not-json")] == 1
    assert metrics[series(dead, reason="missing-field")] == 1
    _, expected_alerts = expected_outcome(valid, load_plans(EXAMPLE_PLANS))
    assert total("leadscore_alerts_sent_total") == alerts == len(expected_alerts) == 2
    assert total("leadscore_score_updates_sent_total") == updates
    assert all(value == 0 for name, value in metrics.items() if "consumer_lag{" in name)
    assert metrics["leadscore_ready"] == 1
    at = "leadscore_contacts_at_threshold"
    assert metrics[series(at, plan="lead-score", threshold="warm")] == 1
    assert metrics[series(at, plan="lead-score", threshold="hot")] == 0
    assert metrics[series(at, plan="icp-fit", threshold="sales-ready")] == 1
    text = http_get(worker.url + "/metrics")[1]
    assert not any(contact in text for contact in ("m-warm", "m-fit", "m-other", "m-bad"))


@pytest.mark.integration
def test_any_worker_answers_for_any_contact_and_a_survivor_takes_over(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    prefix = new_prefix()
    first = start_worker(name="first", prefix=prefix, partitions=4)
    second = start_worker(name="second", prefix=prefix, partitions=4)

    def split() -> bool:
        owned = [http_get(w.url + "/readyz")[1] for w in (first, second)]
        parts = [
            set(body["partitions"]) if isinstance(body, dict) and "partitions" in body else set()
            for body in owned
        ]
        return all(parts) and parts[0] | parts[1] == {0, 1, 2, 3} and not parts[0] & parts[1]

    wait_until(split, 90, "the partitions to be split between the two workers")
    contacts = [f"route-{i}" for i in range(12)]
    publish(kafka_bootstrap, first.topics.events, [e for c in contacts for e in _warm_events(c)])

    def reaches(worker: WorkerProcess, contact: str, target: int) -> Callable[[], bool]:
        return lambda: worker.score(contact) == target

    for contact in contacts:
        wait_until(reaches(first, contact, 110), 60, f"{contact} via the first worker")
        assert second.score(contact) == 110
    # GET /leads on either worker merges both workers' partitions.
    assert_lead_scores_match(second, kafka_bootstrap, set(contacts))
    status, warm = http_get(f"{first.url}/leads?plan=lead-score&threshold=warm&limit=5")
    assert (status, warm["partial"], len(warm["leads"])) == (200, False, 5), warm
    status, counts = http_get(f"{second.url}/leads/counts?plan=lead-score")
    assert (status, counts["thresholds"], counts["partial"]) == (200, {"warm": 12, "hot": 0}, False)

    second.stop(9)
    wait_until(
        lambda: http_get(first.url + "/readyz")[1].get("partitions") == [0, 1, 2, 3],
        90,
        "the first worker to take every partition over",
    )
    publish(
        kafka_bootstrap,
        first.topics.events,
        [event("email.opened", 3 * 3600, contact=c, event_id=f"{c}-later") for c in contacts],
    )
    for contact in contacts:
        wait_until(reaches(first, contact, 120), 60, f"{contact} after the takeover")
    assert_lead_scores_match(first, kafka_bootstrap, set(contacts))


@pytest.mark.integration
def test_a_bug_in_the_core_costs_one_event_not_the_worker(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    """The failing event is dead-lettered; the contact keeps exactly the state it had (the
    failing core had half-changed it), and the worker goes on with the next event."""
    worker = start_worker(module="tests.worker.failing_worker")
    contact = f"bug-{uuid.uuid4().hex[:6]}"
    before, after = _warm_events(contact)[:2], _warm_events(contact)[2:]
    boom = TrackingEvent(
        id="boom", source="/test", type=BOOM, time=before[-1].time, subject=contact
    )
    publish(kafka_bootstrap, worker.topics.events, [*before, boom, *after])
    wait_until(lambda: worker.score(contact) == 110, 60, "every other event scored")
    assert worker.process is not None and worker.process.poll() is None
    metrics = worker.metrics()
    assert metrics[series("leadscore_scoring_errors_total", input="event")] == 1
    assert metrics[series("leadscore_events_dead_lettered_total", reason="scoring-error")] == 1
    assert "scoring failed at" in worker.log(400)
    reader = TopicReader(kafka_bootstrap, worker.topics.dead_letters)
    (dead,) = wait_until(reader.catch_up, 30, "the dead letter")
    headers = {name: value.decode() for name, value in dead.headers()}
    assert headers[DLQ_HEADER + "reason"] == "scoring-error"
    assert "simulated bug in the scoring core" in headers[DLQ_HEADER + "error"]
    assert dead.key() == contact.encode()


@pytest.mark.integration
def test_a_takeover_before_any_commit_loses_nothing(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    # The survivor's fetcher runs while it seeks its new partitions, which have no committed
    # offset: Faust drops what it fetches then, so unless every such partition is sought
    # explicitly, those events are never scored. The other worker dies on its first event,
    # so it commits nothing before it leaves.
    prefix = new_prefix()
    survivor = start_worker(
        name="survivor", prefix=prefix, partitions=4, module="tests.worker.slow_seek_worker"
    )
    failing = start_worker(
        name="failing", prefix=prefix, partitions=4, module="tests.worker.failing_worker"
    )
    wait_until(
        lambda: (
            http_get(failing.url + "/readyz")[0] == 200
            and len(http_get(survivor.url + "/readyz")[1].get("partitions", [])) == 2
        ),
        90,
        "the partitions to be split between the two workers",
    )
    contacts = [f"takeover-{i}" for i in range(16)]
    crashes = [
        TrackingEvent(id=f"{c}-crash", source="/test", type=CRASH, time=T0, subject=c)
        for c in contacts
    ]
    events = [*crashes, *(e for c in contacts for e in _warm_events(c))]
    publish(kafka_bootstrap, survivor.topics.events, events)
    assert failing.process is not None
    assert failing.process.wait(60) == CRASH_EXIT_CODE

    wait_until(
        lambda: all(survivor.score(c) == 110 for c in contacts),
        90,
        "every contact scored by the survivor",
    )
