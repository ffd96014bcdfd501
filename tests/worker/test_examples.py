"""The issue's worked examples, duplicates and dead letters, through a real worker and broker."""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import orjson
import pytest

from streams.kafka.client import EventPublisher, binary_message
from streams.models.events import MAX_EVENT_BYTES, TrackingEvent
from streams.models.outputs import SCORE_CHANGED, THRESHOLD_CROSSED
from streams.scoring import load_plans
from streams.worker.flow.dead_letters import DLQ_HEADER
from tests.support import DAY, T0, attributes, event
from tests.worker.conftest import StartWorker
from tests.worker.expected import expected_outcome
from tests.worker.harness import (
    EXAMPLE_PLANS,
    TopicReader,
    WorkerProcess,
    key_on_partition,
    partition_of,
    publish,
    wait_until,
)

pytestmark = pytest.mark.integration

WARM_BREAKDOWN = {"opened": 10, "clicked": 20, "replied": 30, "pricing": 50}
ICP_ATTRIBUTES = {
    "job_title": "President",
    "region": "Małopolskie",
    "city": "Kraków",
    "source": "form",
    "consent_email": True,
}


def _contact(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def _warm_events(contact: str, base: float = 0.0) -> list[TrackingEvent]:
    """Open, click, reply, pricing visit: 10 + 20 + 30 + 50 = 110 in `lead-score`."""
    return [
        event("email.opened", base, contact=contact, event_id=f"{contact}-open"),
        event(
            "email.clicked", base + 60, {"url": "https://example.com/l"}, contact, f"{contact}-c"
        ),
        event("email.replied", base + 120, contact=contact, event_id=f"{contact}-reply"),
        event(
            "page.visited",
            base + 180,
            {"url": "https://example.com/pricing"},
            contact,
            f"{contact}-p",
        ),
    ]


def _of(
    messages: list[dict[str, Any]], contact: str, kind: str | None = None
) -> list[dict[str, Any]]:
    return [m for m in messages if m["subject"] == contact and (kind is None or m["type"] == kind)]


def _publish_fit_contact_a_month_behind(
    bootstrap: str, worker: WorkerProcess, contact: str
) -> None:
    """Publish `contact`'s ICP-fit attributes, then move its partition's stream time 31 days on.

    Another contact on the same partition sends the later event; the fit contact itself does
    nothing more, so only a timer tick can apply its no-offer-visit penalty (26 -> 16).
    """
    clock_contact = key_on_partition(
        partition_of(contact, worker.partitions), worker.partitions, "clock"
    )
    publish(
        bootstrap,
        worker.topics.events,
        [
            attributes(0, contact, **ICP_ATTRIBUTES),
            event("email.opened", 31 * DAY, contact=clock_contact),
        ],
    )


def _icp_penalised(worker: WorkerProcess, contact: str) -> bool:
    """Whether `worker` serves `contact` with the penalised icp-fit score (26 - 10 = 16): the
    sign, in each timer test, that the contact's due deadline fired."""
    status, body = worker.contact(contact)
    return status == 200 and body["plans"]["icp-fit"]["score"] == 16


def test_lead_score_example_alerts_warm_once_at_110(
    shared_worker: WorkerProcess, kafka_bootstrap: str
) -> None:
    worker, contact = shared_worker, _contact("lead")
    events = _warm_events(contact)
    publish(kafka_bootstrap, worker.topics.events, events)

    updates = TopicReader(kafka_bootstrap, worker.topics.updates)
    alerts = TopicReader(kafka_bootstrap, worker.topics.alerts)
    wait_until(lambda: len(_of(updates.values(), contact)) == 4, 60, "four score updates")
    warm = wait_until(lambda: _of(alerts.values(), contact), 30, "the warm alert")

    assert len(warm) == 1
    data = warm[0]["data"]
    assert warm[0]["type"] == THRESHOLD_CROSSED
    assert (data["plan"], data["threshold"], data["score"]) == ("lead-score", "warm", 110)
    assert data["breakdown"] == WARM_BREAKDOWN
    _, expected_ids = expected_outcome(events, load_plans(EXAMPLE_PLANS))
    assert {warm[0]["id"]} == expected_ids

    status, body = worker.contact(contact)
    assert status == 200
    assert body["plans"]["lead-score"]["score"] == 110
    assert body["plans"]["lead-score"]["thresholds_reached"] == ["warm"]
    assert body["plans"]["lead-score"]["breakdown"] == WARM_BREAKDOWN
    assert worker.contact(_contact("nobody"))[0] == 404


def test_icp_fit_example_reaches_16_through_the_timer_with_event_clock(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    worker = start_worker(clock="event")
    contact = _contact("icp")
    _publish_fit_contact_a_month_behind(kafka_bootstrap, worker, contact)
    wait_until(lambda: _icp_penalised(worker, contact), 60, "icp-fit to reach 16")
    reader = TopicReader(kafka_bootstrap, worker.topics.updates)
    # The look-up can see the new state a moment before the update is readable on the topic.
    last = wait_until(
        lambda: (
            (mine := _of(reader.values(), contact, SCORE_CHANGED))
            and mine[-1]["data"]["score"] == 16
            and mine[-1]["data"]
        ),
        30,
        "the penalty's score update",
    )
    assert (last["plan"], last["previous_score"], last["score"]) == ("icp-fit", 26, 16)
    assert last["cause"] == {"rules": ["no-offer-visit"], "timer": True}
    assert last["breakdown"]["no-offer-visit"] == -10
    assert worker.metrics()["leadscore_timer_ticks_processed_total"] >= 1


def test_a_fresh_worker_recovers_the_stream_time_and_fires_due_deadlines(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    # The first worker never runs a timer pass; once it has persisted, it is killed and a
    # worker with an empty data dir takes over. No event follows, so only a stream time
    # recovered from the changelog can make the penalty fire.
    first = start_worker(name="first", clock="event", timer_interval=3600.0)
    contact = _contact("moved")
    _publish_fit_contact_a_month_behind(kafka_bootstrap, first, contact)
    wait_until(lambda: first.metrics()["leadscore_contacts"] == 2, 60, "both states persisted")
    first.stop(signal.SIGKILL)
    second = start_worker(name="second", prefix=first.prefix, clock="event")
    wait_until(
        lambda: _icp_penalised(second, contact), 60, "the penalty from the recovered stream time"
    )


def test_wall_clock_fires_a_passed_deadline_within_the_interval(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    worker = start_worker(clock="wall", timer_interval=1.0)
    contact = _contact("wall")
    month_ago = time.time() - 31 * DAY - T0  # `attributes` counts from T0
    publish(
        kafka_bootstrap, worker.topics.events, [attributes(month_ago, contact, **ICP_ATTRIBUTES)]
    )
    wait_until(
        lambda: _icp_penalised(worker, contact), 30, "the wall-clock timer to apply the penalty"
    )


def test_duplicates_change_no_score_and_send_no_new_alert(
    shared_worker: WorkerProcess, kafka_bootstrap: str
) -> None:
    worker = shared_worker
    contacts = [_contact("dup") for _ in range(3)]
    events = [item for contact in contacts for item in _warm_events(contact, base=3600)]
    publish(kafka_bootstrap, worker.topics.events, events)
    alerts = TopicReader(kafka_bootstrap, worker.topics.alerts)

    def all_warm() -> list[dict[str, Any]] | None:
        mine = [m for m in alerts.values() if m["subject"] in contacts]
        return mine if len(mine) == len(contacts) else None

    first = wait_until(all_warm, 60, "one warm alert per contact")
    before = {c: worker.contact(c)[1]["plans"] for c in contacts}
    duplicates = worker.consumed("duplicate")

    publish(kafka_bootstrap, worker.topics.events, events, mode="structured")  # same ids
    wait_until(
        lambda: worker.consumed("duplicate") == duplicates + len(events), 60, "the duplicates"
    )
    assert [m for m in alerts.values() if m["subject"] in contacts] == first
    assert {c: worker.contact(c)[1]["plans"] for c in contacts} == before


def _bad_inputs(
    contact: str,
) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """(expected reason, key, value, headers) for every kind of bad input the issue lists."""
    good = TrackingEvent(
        id="bad", source="/test", type="email.opened", time=T0, subject=contact, data={}
    ).to_cloudevent()

    def structured(**changes: Any) -> bytes:
        body = {**good, **changes}
        return orjson.dumps({k: v for k, v in body.items() if v is not None})

    key = contact.encode()
    binary_key, _, binary_headers = binary_message(
        TrackingEvent(id="b", source="/test", type="email.opened", time=T0, subject=contact)
    )
    return [
        ("not-json", key, b"{this is not json", []),
        ("not-json", binary_key, b"\xff\xfe", binary_headers),
        ("not-object", key, b"[1, 2, 3]", []),
        ("missing-field", key, structured(id=None), []),
        ("wrong-type", key, structured(source=42), []),
        ("bad-time", key, structured(time="yesterday"), []),
        ("key-mismatch", b"someone-else", structured(), []),
        ("bad-specversion", key, structured(specversion="0.3"), []),
        ("oversized", key, b"x" * (MAX_EVENT_BYTES + 1), [("trace", b"t-1")]),
    ]


def test_each_kind_of_bad_input_is_dead_lettered_and_the_rest_applied(
    shared_worker: WorkerProcess, kafka_bootstrap: str
) -> None:
    worker, contact = shared_worker, _contact("dlq")
    bad = _bad_inputs(contact)
    good = _warm_events(contact, base=7200)
    with EventPublisher(kafka_bootstrap, worker.topics.events) as publisher:
        for index, (_, key, value, headers) in enumerate(bad):
            publisher.publish_raw(key, value, headers)
            if index < len(good):
                publisher.publish(good[index])

    def applied() -> bool:
        status, body = worker.contact(contact)
        return status == 200 and body["plans"]["lead-score"]["score"] == 110

    wait_until(applied, 60, "the valid events between the bad ones")
    reader = TopicReader(kafka_bootstrap, worker.topics.dead_letters)
    keys = {key for _, key, _, _ in bad}

    def dead_letters() -> list[Any] | None:
        found = [m for m in reader.catch_up() if m.key() in keys]
        return found if len(found) == len(bad) else None

    expected = {(reason, value): (key, headers) for reason, key, value, headers in bad}
    seen = set()
    for message in wait_until(dead_letters, 60, "every bad input in the DLQ"):
        extra = {n: raw.decode() for n, raw in message.headers() if n.startswith(DLQ_HEADER)}
        reason = extra[DLQ_HEADER + "reason"]
        key, headers = expected[(reason, message.value())]
        assert message.key() == key
        assert [(n, v) for n, v in message.headers() if not n.startswith(DLQ_HEADER)] == headers
        assert extra[DLQ_HEADER + "error"]
        assert extra[DLQ_HEADER + "topic"] == worker.topics.events
        assert int(extra[DLQ_HEADER + "partition"]) == partition_of(key.decode(), worker.partitions)
        assert int(extra[DLQ_HEADER + "offset"]) >= 0
        seen.add((reason, message.value()))
    assert seen == set(expected)
