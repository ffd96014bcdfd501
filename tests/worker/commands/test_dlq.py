"""`leadscore dlq replay` against the session's broker: dead letters laid out as the worker
writes them (`outbox.dead_letter_headers`) go back to the input topic once, whole, keyed
and partitioned like the originals, without the worker's headers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage
from faust.types.tuples import Message

from streams.cli import build_parser, main
from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.client import KeyedProducer, binary_message
from streams.kafka.security import KafkaConnection
from streams.models.events import EventError
from streams.worker.commands.dlq import replay_headers
from streams.worker.flow.dead_letters import DLQ_HEADER
from streams.worker.flow.outbox import dead_letter_headers
from streams.worker.flow.reroute import REROUTED_HEADER
from streams.worker.settings import TopicNames, resolve_client
from tests.kafka.raw_records import RawName, send_batches
from tests.worker.conftest import StartWorker
from tests.worker.harness import TopicReader, new_prefix, partition_of, wait_until
from tests.worker.test_examples import _warm_events

PARTITIONS = 3
Headers = list[tuple[str, bytes | None]]


def _dead_letter(
    topics: TopicNames, key: str | None, value: bytes, headers: Headers, reason: str, offset: int
) -> tuple[bytes | None, bytes, Headers]:
    """Key, value and headers of the dead letter the worker writes for this input message."""
    raw_key = key.encode() if key is not None else None
    original = Message(topics.events, 1, offset, 0.0, 0, headers, raw_key, value, None)
    return raw_key, value, dead_letter_headers(original, EventError(reason, f"bad: {reason}"))


def _setup(bootstrap: str, dead_letters: list[tuple[bytes | None, bytes, Headers]]) -> str:
    prefix = new_prefix()
    topics = TopicNames.with_prefix(prefix)
    ensure_topics(
        bootstrap, [TopicSpec(t, PARTITIONS) for t in (topics.events, topics.dead_letters)]
    )
    _produce(bootstrap, topics.dead_letters, dead_letters)
    return prefix


def _produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes, Headers]]
) -> None:
    producer = KeyedProducer(KafkaConnection(bootstrap))
    for key, value, headers in messages:
        producer.produce(topic, key, value, headers)
    producer.flush()


def _replay(bootstrap: str, prefix: str, *options: str) -> int:
    return main(["dlq", "replay", "--bootstrap", bootstrap, "--topic-prefix", prefix, *options])


def _received(reader: TopicReader) -> list[tuple[bytes | None, bytes, Headers, int]]:
    messages: list[KafkaMessage] = reader.catch_up()
    return [(m.key(), m.value(), list(m.headers() or []), m.partition()) for m in messages]


def _expected(key: str, value: bytes, headers: Headers) -> tuple[Any, ...]:
    return key.encode(), value, headers, partition_of(key, PARTITIONS)


@pytest.mark.integration
def test_replay_by_reason_then_the_rest_each_once(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topics_for_layout = TopicNames.with_prefix("x.")
    json_headers: Headers = [("ce_id", b"e-1"), ("x-trace", b"t-1")]
    forwarded: Headers = [("ce_id", b"e-2"), (REROUTED_HEADER + "partition", b"0")]
    dead = [
        _dead_letter(topics_for_layout, "c-1", b"{not json", json_headers, "not-json", 10),
        _dead_letter(topics_for_layout, "c-2", b'{"a": 1}', forwarded, "missing-field", 11),
        _dead_letter(topics_for_layout, "c-3", b"{also not", [("ce_id", b"e-3")], "not-json", 12),
    ]
    truncated_key, truncated_value, truncated_headers = _dead_letter(
        topics_for_layout, "c-4", b"x" * 10, [], "oversized", 13
    )
    dead.append(
        (truncated_key, truncated_value, [*truncated_headers, (DLQ_HEADER + "truncated", b"true")])
    )
    prefix = _setup(kafka_bootstrap, dead)
    topics = TopicNames.with_prefix(prefix)
    reader = TopicReader(kafka_bootstrap, topics.events)

    assert _replay(kafka_bootstrap, prefix, "--reason", "not-json", "--dry-run") == 0
    assert "would replay 2 dead letter(s)" in capsys.readouterr().out
    assert _received(reader) == []

    assert _replay(kafka_bootstrap, prefix, "--reason", "not-json") == 0
    out = capsys.readouterr().out
    assert "replayed 2 dead letter(s)" in out and "left 2 of other reasons" in out
    first = _received(reader)
    assert sorted(first) == sorted(
        [
            _expected("c-1", b"{not json", json_headers),
            _expected("c-3", b"{also not", [("ce_id", b"e-3")]),
        ]
    )

    assert _replay(kafka_bootstrap, prefix) == 0
    out = capsys.readouterr().out
    assert "replayed 1 dead letter(s)" in out
    assert "skipped 2 replayed by an earlier run" in out
    assert f"not replayed, truncated: {topics.dead_letters}/" in out
    assert "(original at x.tracking-events/1@13)" in out
    everything = _received(reader)
    assert everything[len(first) :] == [_expected("c-2", b'{"a": 1}', [("ce_id", b"e-2")])]

    assert _replay(kafka_bootstrap, prefix, "--reason", "not-json") == 0
    assert _replay(kafka_bootstrap, prefix) == 0
    assert "replayed 0 dead letter(s)" in capsys.readouterr().out
    assert len(_received(reader)) == 3


@pytest.mark.integration
def test_a_later_run_replays_only_the_new_dead_letters(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = TopicNames.with_prefix("x.")
    prefix = _setup(kafka_bootstrap, [_dead_letter(layout, "n-1", b"{", [], "not-json", 1)])
    topics = TopicNames.with_prefix(prefix)
    reader = TopicReader(kafka_bootstrap, topics.events)
    assert _replay(kafka_bootstrap, prefix) == 0
    assert [m[0] for m in _received(reader)] == [b"n-1"]
    _produce(
        kafka_bootstrap, topics.dead_letters, [_dead_letter(layout, "n-2", b"[", [], "not-json", 2)]
    )
    capsys.readouterr()
    assert _replay(kafka_bootstrap, prefix, "--reason", "not-json") == 0
    assert [m[0] for m in _received(reader)] == [b"n-1", b"n-2"]
    assert "replayed 1 dead letter(s)" in capsys.readouterr().out


@pytest.mark.integration
def test_replayed_events_are_scored_once_by_the_worker(
    start_worker: StartWorker, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dead letters the worker can score now (the fix was on its side) reach their contact's
    owner through the input, and a second run sends nothing."""
    worker = start_worker()
    contact = "r-warm"
    dead = [
        _dead_letter(worker.topics, contact, value, headers, "scoring-error", offset)
        for offset, (_, value, headers) in enumerate(map(binary_message, _warm_events(contact)))
    ]
    _produce(kafka_bootstrap, worker.topics.dead_letters, dead)
    assert _replay(kafka_bootstrap, worker.prefix) == 0
    assert "replayed 4 dead letter(s)" in capsys.readouterr().out
    wait_until(lambda: worker.score(contact) == 110, 60, "the replayed events scored")
    assert _replay(kafka_bootstrap, worker.prefix) == 0
    assert "replayed 0 dead letter(s)" in capsys.readouterr().out
    assert worker.consumed("applied") == 4
    assert worker.consumed("dead_lettered") == 0


@pytest.mark.integration
def test_a_missing_topic_is_an_error_naming_the_prefix(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _replay(kafka_bootstrap, new_prefix()) == 3
    assert (
        "does not exist: check --topic-prefix (LEADSCORE_TOPIC_PREFIX)" in capsys.readouterr().err
    )


@pytest.mark.integration
def test_null_header_values_are_replayed_and_unreadable_names_reported(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = TopicNames.with_prefix("x.")
    nulls: Headers = [("ce_id", None), ("x-null", None), ("x-trace", b"t")]
    prefix = _setup(kafka_bootstrap, [_dead_letter(layout, "n-1", b"{", nulls, "not-json", 1)])
    topics = TopicNames.with_prefix(prefix)
    unreadable = [(b"n-2", b"{", [(RawName(b"x-\xff"), None), (DLQ_HEADER + "reason", b"x")])]
    (offset,) = asyncio.run(send_batches(kafka_bootstrap, topics.dead_letters, [(0, unreadable)]))
    assert _replay(kafka_bootstrap, prefix) == 0
    out = capsys.readouterr().out
    assert "replayed 1 dead letter(s)" in out
    assert f"not replayed, header names not UTF-8: {topics.dead_letters}/0@{offset}" in out
    assert _received(TopicReader(kafka_bootstrap, topics.events)) == [_expected("n-1", b"{", nulls)]


def test_replayed_headers_drop_only_the_workers_own() -> None:
    headers: Headers = [
        ("ce_id", b"1"),
        (DLQ_HEADER + "reason", b"not-json"),
        (REROUTED_HEADER + "offset", b"7"),
        ("leadscore.other", b"kept"),
        ("x-null", None),
    ]
    assert replay_headers(headers) == [
        ("ce_id", b"1"),
        ("leadscore.other", b"kept"),
        ("x-null", None),
    ]


def test_the_options_are_the_workers_own(tmp_path: Any) -> None:
    """Prefix, app id and security resolve as for the worker, so a replay reaches a secured
    cluster with the same flags and variables."""
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    command = "dlq replay --bootstrap b:9093 --topic-prefix p. --app-id scorer"
    security = ["--security-protocol", "SASL_SSL", "--sasl-password-file", str(password)]
    args = build_parser().parse_args([*command.split(), *security])
    settings = resolve_client(args, {"LEADSCORE_SASL_USERNAME": "ops"})
    assert settings.kafka.librdkafka()["sasl.username"] == "ops"
    assert settings.kafka.librdkafka()["sasl.password"] == "s3cret"
    assert (settings.topics.events, settings.topics.dead_letters, settings.group) == (
        "p.tracking-events",
        "p.tracking-events-dlq",
        "p.scorer",
    )


def test_settings_that_cannot_work_stop_it_before_kafka(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEADSCORE_SASL_PASSWORD", raising=False)
    command = "dlq replay --bootstrap 127.0.0.1:1 --security-protocol SASL_SSL --sasl-username ops"
    code = main(command.split())
    assert code == 2
    assert (
        "LEADSCORE_SASL_PASSWORD (or --sasl-password-file) is required" in capsys.readouterr().err
    )
