"""Dead letters the broker takes: the producer's limit from the topic, truncation beyond it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.client import EventPublisher
from streams.models.events import MAX_EVENT_BYTES
from streams.worker.commands.run import EXIT_TOPICS
from streams.worker.flow.dead_letters import (
    DLQ_HEADER,
    MAX_ERROR_BYTES,
    TRUNCATED_HEADER,
    DeadLetterTopicError,
    error_text,
    fit,
    read_max_message_bytes,
    record_size,
    sendable_name,
)
from streams.worker.settings import TopicNames
from tests.worker.conftest import StartWorker
from tests.worker.harness import (
    EXAMPLE_PLANS,
    REPO,
    TopicReader,
    new_prefix,
    series,
    wait_until,
)
from tests.worker.test_examples import _warm_events

OWN = [(DLQ_HEADER + "reason", b"oversized"), (DLQ_HEADER + "offset", b"7")]
ORIGINAL = [("trace", b"t" * 100), ("content-type", b"application/json")]


def test_a_dead_letter_that_fits_is_sent_as_it_is() -> None:
    headers = [*ORIGINAL, *OWN]
    limit = record_size(b"key", b"v" * 1000, headers)
    letter = fit(b"key", b"v" * 1000, headers, limit)
    assert (letter.key, letter.value, letter.headers, letter.truncated) == (
        b"key",
        b"v" * 1000,
        headers,
        False,
    )


@pytest.mark.parametrize(("key_size", "over"), [(3, 1), (3, 50_000), (40_000, 1)])
def test_a_dead_letter_too_large_keeps_its_own_headers_the_key_and_a_prefix(
    key_size: int, over: int
) -> None:
    key, value, headers = b"k" * key_size, bytes(range(256)) * 200, [*ORIGINAL, *OWN]
    limit = record_size(key, value, headers) - over
    letter = fit(key, value, headers, limit)
    assert letter.truncated
    assert record_size(letter.key, letter.value, letter.headers) <= limit
    assert letter.key == key  # the limit leaves room for it in every case here
    assert letter.value is not None and value.startswith(letter.value)
    assert letter.headers[:-1] == OWN  # the original headers are dropped
    name, marker = letter.headers[-1]
    assert name == TRUNCATED_HEADER
    assert orjson.loads(marker) == {
        "key_bytes": key_size,
        "value_bytes": len(value),
        "headers_dropped": 2,
    }


def test_null_header_values_are_kept_and_count_as_empty() -> None:
    """A null header value (Java's `new RecordHeader(name, null)`) made `record_size` raise,
    and the worker exit at every restart on the same message (issue 18)."""
    headers = [("trace", None), *ORIGINAL, ("ce_id", None), *OWN]
    assert record_size(b"k", b"v", headers) == record_size(
        b"k", b"v", [(n, v or b"") for n, v in headers]
    )
    letter = fit(b"k", b"v", headers, 20_000)
    assert letter.headers == headers and not letter.truncated
    cut = fit(b"k", b"v" * 30_000, headers, 20_000)
    assert cut.truncated and orjson.loads(cut.headers[-1][1])["headers_dropped"] == 4


def test_a_header_name_that_is_not_utf8_is_sent_with_its_bytes_escaped() -> None:
    raw = b"x-\xff\xc3(".decode("utf-8", "surrogateescape")  # as the worker's reader keeps it
    assert sendable_name(raw) == "x-\\xff\\xc3("
    assert sendable_name("zażółć") == "zażółć" and sendable_name("ce_id") == "ce_id"
    assert record_size(None, None, [(sendable_name(raw), None)]) > 0


def test_a_key_larger_than_the_limit_is_cut_too() -> None:
    letter = fit(b"k" * 50_000, b"v", OWN, 20_000)
    assert letter.truncated and letter.value == b""
    assert record_size(letter.key, letter.value, letter.headers) <= 20_000


def test_the_error_header_is_bounded_and_stays_utf8() -> None:
    text = error_text("ł" * MAX_ERROR_BYTES)
    assert len(text) <= MAX_ERROR_BYTES and text.decode() == "ł" * (MAX_ERROR_BYTES // 2)


@pytest.mark.integration
def test_the_limit_is_read_from_the_topic(kafka_bootstrap: str) -> None:
    prefix = new_prefix()
    small, tiny = f"{prefix}small", f"{prefix}tiny"
    ensure_topics(
        kafka_bootstrap,
        [
            TopicSpec(small, 1, config={"max.message.bytes": "300000"}),
            TopicSpec(tiny, 1, config={"max.message.bytes": "1000"}),
        ],
    )
    assert read_max_message_bytes(kafka_bootstrap, small) == 300_000
    with pytest.raises(DeadLetterTopicError, match=r"max.message.bytes is 1000"):
        read_max_message_bytes(kafka_bootstrap, tiny)


@pytest.mark.integration
def test_a_dead_letter_topic_too_small_stops_the_worker_at_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = new_prefix()
    dead_letters = TopicNames.with_prefix(prefix).dead_letters
    ensure_topics(
        kafka_bootstrap, [TopicSpec(dead_letters, 1, config={"max.message.bytes": "1000"})]
    )
    result = subprocess.run(
        [
            sys.executable, "-m", "streams.worker",
            "--plans", str(EXAMPLE_PLANS), "--bootstrap", kafka_bootstrap,
            "--topic-prefix", prefix, "--data-dir", str(tmp_path / "data"),
        ],
        cwd=REPO, check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == EXIT_TOPICS, result.stderr
    assert f"topic {dead_letters}: max.message.bytes is 1000" in result.stderr


BROKER_LIMIT = 1_048_588
"""The broker's default `message.max.bytes`, so every topic's `max.message.bytes` here."""


@pytest.mark.integration
def test_dead_letters_at_each_size_limit(start_worker: StartWorker, kafka_bootstrap: str) -> None:
    """Just under and over the event limit, librdkafka's default limit (1,000,000) and the
    broker's (1,048,588, less than a dead letter's headers away): each is dead-lettered, the
    largest truncated, the valid events around them applied, and the worker never restarts."""
    worker = start_worker()
    contact = f"sizes-{uuid.uuid4().hex[:6]}"
    sizes = [MAX_EVENT_BYTES + 1, 999_999, 1_000_000, 1_000_001, BROKER_LIMIT - 600]
    truncated = BROKER_LIMIT - 200
    largest_event = _padded_event(contact)
    assert len(largest_event) == MAX_EVENT_BYTES
    good = _warm_events(contact)
    config = {"message.max.bytes": 2 * BROKER_LIMIT}
    with EventPublisher(kafka_bootstrap, worker.topics.events, config=config) as publisher:
        publisher.publish(good[0])
        publisher.publish_raw(contact.encode(), largest_event, [])
        for size in [*sizes, truncated]:
            publisher.publish_raw(contact.encode(), b"x" * size, [("size", str(size).encode())])
        for item in good[1:]:
            publisher.publish(item)
    wait_until(lambda: worker.score(contact) == 120, 60, "the valid events, the largest included")

    reader = TopicReader(kafka_bootstrap, worker.topics.dead_letters)
    letters = wait_until(
        lambda: (found := reader.catch_up()) and len(found) == len(sizes) + 1 and found,
        60,
        "every oversized value in the DLQ",
    )
    by_size: dict[int, Any] = {}
    for letter in letters:
        headers = dict(letter.headers())
        assert headers[DLQ_HEADER + "reason"] == b"oversized"
        assert letter.key() == contact.encode()
        if TRUNCATED_HEADER in headers:
            original = orjson.loads(headers[TRUNCATED_HEADER])
            by_size[original["value_bytes"]] = letter
            assert "size" not in headers
            assert b"x" * len(letter.value()) == letter.value()
        else:
            by_size[int(headers["size"])] = letter
            assert letter.value() == b"x" * int(headers["size"])
    assert sorted(by_size) == sorted([*sizes, truncated])
    assert TRUNCATED_HEADER in dict(by_size[truncated].headers())
    metrics = worker.metrics()
    assert metrics["leadscore_dead_letters_truncated_total"] == 1
    assert metrics[series("leadscore_events_dead_lettered_total", reason="oversized")] == 6
    assert worker.process is not None and worker.process.poll() is None


def _padded_event(contact: str) -> bytes:
    """A valid structured event (`email.opened`, 10 points) of exactly `MAX_EVENT_BYTES`."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"{contact}-largest",
        "source": "/test",
        "type": "email.opened",
        "time": "2026-01-01T00:30:00Z",
        "subject": contact,
        "data": {"campaign": ""},
    }
    padding = MAX_EVENT_BYTES - len(orjson.dumps(event))
    return orjson.dumps({**event, "data": {"campaign": "x" * padding}})
