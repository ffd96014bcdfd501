"""What a sink of `lead-scores` would hold, against what the workers answer over HTTP.

`topic_table` is the reader the issue describes: every partition of the topic from offset 0
into a dict, the latest record per key winning and a tombstone removing it, as compaction and
an upserting sink do. `lead_scores_differences` compares it with `GET /contacts/{id}` for
every contact and with `GET /leads` paged through for every plan.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.models.times import parse_time
from tests.worker.harness import WorkerProcess, http_get, wait_until

PAGE = 50


def topic_table(bootstrap: str, topic: str) -> tuple[dict[str, dict[str, Any]], int]:
    """The table rebuilt from the topic (read_committed), and how many records it read."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lead-table-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        table: dict[str, dict[str, Any]] = {}
        pending, read = set(partitions), 0
        while pending:
            message = consumer.poll(10)
            assert message is not None, f"no end of {topic} partitions {pending} in 10 s"
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                pending.discard(message.partition())
                continue
            read += 1
            key, value = message.key().decode(), message.value()
            if value is None:
                table.pop(key, None)
            else:
                table[key] = json.loads(value)
                assert table[key]["contact_id"] == key
        return table, read
    finally:
        consumer.close()


def _leads(worker: WorkerProcess, plan: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every page of `GET /leads?plan=...`, and the problems met on the way."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"plan": plan, "limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
        status, body = http_get(f"{worker.url}/leads?{urlencode(params)}")
        if status != 200 or body["partial"]:
            return found, [f"GET /leads {params}: {status} {body}"]
        found += body["leads"]
        cursor = body["next"]
        if cursor is None:
            return found, []


def lead_scores_differences(worker: WorkerProcess, bootstrap: str, contacts: set[str]) -> list[str]:
    """Where the topic's table, `GET /contacts/{id}` of `contacts` and `GET /leads` disagree."""
    table, _ = topic_table(bootstrap, worker.topics.leads)
    problems = [f"{c}: in the topic, not among the contacts" for c in table.keys() - contacts]
    plans: set[str] = set()
    for contact in sorted(contacts):
        status, body = worker.contact(contact)
        record = table.get(contact)
        if status == 404:
            if record is not None:
                problems.append(f"{contact}: 404 over HTTP, {record} in the topic")
            continue
        if status != 200:
            problems.append(f"{contact}: HTTP {status}")
            continue
        shown = {p: (v["score"], v["thresholds_reached"]) for p, v in body["plans"].items()}
        plans |= shown.keys()
        published = (
            None
            if record is None
            else {p: (v["score"], v["thresholds"]) for p, v in record["plans"].items()}
        )
        if published != shown or record is None or record["last_activity"] != body["last_activity"]:
            problems.append(f"{contact}: HTTP {shown}, topic {record}")
    for plan in sorted(plans):
        leads, failed = _leads(worker, plan)
        problems += failed
        listed = [(e["contact_id"], e["score"], e["changed_at"]) for e in leads]
        expected = [
            (c, r["plans"][plan]["score"], r["changed_at"])
            for c, r in table.items()
            if plan in r["plans"]
        ]
        if sorted(listed) != sorted(expected):
            problems.append(
                f"GET /leads?plan={plan}: {len(listed)} leads, {len(expected)} in topic"
            )
        order = [(-score, -parse_time(changed_at), c) for c, score, changed_at in listed]
        if order != sorted(order):
            problems.append(f"GET /leads?plan={plan}: not in score, change, id order")
    return problems


def assert_lead_scores_match(worker: WorkerProcess, bootstrap: str, contacts: set[str]) -> None:
    """Wait until the topic's table, the look-ups and `GET /leads` agree (commits in flight
    settle within a few commit intervals)."""
    last: list[str] = []
    started = time.monotonic()

    def agree() -> bool:
        last[:] = lead_scores_differences(worker, bootstrap, contacts)
        return not last

    try:
        wait_until(agree, 60, "lead-scores, GET /contacts and GET /leads to agree", 1.0)
    except AssertionError as error:
        raise AssertionError(f"{error}:\n" + "\n".join(last[:20])) from None
    print(f"lead-scores agreed for {len(contacts)} contacts in {time.monotonic() - started:.1f} s")
