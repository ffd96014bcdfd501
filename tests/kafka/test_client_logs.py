"""Client log repeats: one line per broker and kind per interval, with the count held back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import aiokafka.conn
import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import KafkaError, Producer

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.client_logs import (
    LIBRDKAFKA,
    MAX_KINDS,
    RepeatFilter,
    log_client_error,
    quiet_aiokafka,
    repeat_kind,
)
from streams.kafka.security import KafkaConnection
from tests.worker.harness import free_port

AIOKAFKA_LOGGERS = (
    "aiokafka",
    "aiokafka.client",
    "aiokafka.conn",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
)
REFUSED = "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after %dms in state CONNECT)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, *args: object, name: str = "aiokafka.conn") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, args, None)


def test_repeats_are_held_back_for_the_interval_and_counted_on_the_next_line() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval=10.0, clock=clock)
    assert repeats.filter(_record(REFUSED, 0))
    for elapsed in range(1, 10):
        clock.now += 1.0
        assert not repeats.filter(_record(REFUSED, elapsed))
    clock.now += 1.0
    record = _record(REFUSED, 3)
    assert repeats.filter(record)
    assert record.getMessage() == REFUSED % 3 + " (9 more like this in the last 10 s)"
    clock.now += 10.0
    quiet = _record(REFUSED, 4)
    assert repeats.filter(quiet)  # nothing held back since: no count
    assert quiet.getMessage() == REFUSED % 4


def test_each_broker_and_each_kind_of_message_has_its_own_interval() -> None:
    repeats = RepeatFilter(interval=10.0, clock=Clock())
    other_broker = REFUSED.replace("127.0.0.1:9092", "127.0.0.2:9092")
    assert repeats.filter(_record(REFUSED, 0))
    assert repeats.filter(_record(other_broker, 0))
    assert repeats.filter(_record("Unable to update metadata from [1]"))
    assert repeats.filter(_record(REFUSED, 0, name="aiokafka.client"))
    assert not repeats.filter(_record(REFUSED, 17))
    assert not repeats.filter(_record(other_broker, 1))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (
            "Unable connect to node with id 1: [Errno 111] Connect call failed ('127.0.0.1', 9092)",
            "Unable connect to node with id 2: [Errno 111] Connect call failed ('127.0.0.1', 9093)",
        ),
        (
            "Failed fetch messages from 1: NodeNotReadyError: ... (node id 1).",
            "Failed fetch messages from 2: NodeNotReadyError: ... (node id 2).",
        ),
    ],
)
def test_aiokafka_names_brokers_its_own_ways(one: str, other: str) -> None:
    assert repeat_kind(_record(one)) != repeat_kind(_record(other))
    assert repeat_kind(_record(one)) == repeat_kind(_record(one.replace("111", "112")))


def test_forgotten_kinds_make_room_without_losing_live_ones() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval=10.0, clock=clock)
    for number in range(MAX_KINDS):
        repeats.filter(_record(f"broker-{chr(65 + number % 26)}{number // 26}:1 down"))
    clock.now += 11.0
    assert repeats.filter(_record("fresh:1 down"))
    assert not repeats.filter(_record("fresh:1 down"))


def test_every_aiokafka_logger_gets_the_filter() -> None:
    repeats = RepeatFilter()
    quiet_aiokafka(repeats)
    quiet_aiokafka(repeats)
    try:
        assert logging.getLogger(aiokafka.conn.__name__).filters.count(repeats) == 1
        assert repeats in logging.getLogger("aiokafka.consumer.fetcher").filters
    finally:
        for name in AIOKAFKA_LOGGERS:
            logging.getLogger(name).removeFilter(repeats)


def test_librdkafka_errors_are_warnings_unless_fatal(caplog: pytest.LogCaptureFixture) -> None:
    transport = KafkaError(KafkaError._TRANSPORT, "127.0.0.1:1/bootstrap: refused")
    fatal = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    with caplog.at_level(logging.WARNING, LIBRDKAFKA.name):
        log_client_error(transport)
        log_client_error(fatal)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "_TRANSPORT: 127.0.0.1:1/bootstrap: refused"),
        (logging.ERROR, "_FENCED: fenced by a newer instance"),
    ]


@pytest.mark.integration
def test_a_client_pointed_at_a_closed_port_logs_each_kind_once(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """librdkafka retries about once a second. A raw client prints every refusal to stderr;
    one built from a `KafkaConnection` logs each kind once per interval, through logging."""
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    ours = Producer(KafkaConnection(bootstrap).librdkafka({"client.id": "ours"}))
    raw = Producer({"bootstrap.servers": bootstrap, "client.id": "raw"})
    raw_lines, ours_lines = 0, 0
    with caplog.at_level(logging.DEBUG, LIBRDKAFKA.name):
        deadline = time.monotonic() + 60
        while raw_lines < 4 and time.monotonic() < deadline:
            ours.poll(0.2)
            raw.poll(0.2)
            stderr = capfd.readouterr().err
            raw_lines += stderr.count("|raw#producer")
            ours_lines += stderr.count("|ours#producer")
    assert raw_lines >= 4, "the raw client should have retried and printed each time"
    assert ours_lines == 0
    refused = [r.getMessage() for r in caplog.records if "Connection refused" in r.getMessage()]
    assert refused, "our client's refusals go through logging"
    assert len(refused) <= 2, refused  # librdkafka's FAIL line and the _TRANSPORT error, once
    assert len({repeat_kind(r) for r in caplog.records}) == len(caplog.records)


class _Counting(logging.Filter):
    """Counts every record offered, before the repeat filter decides."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.count += 1
        return True


@pytest.mark.integration
def test_aiokafka_logs_each_kind_once_while_its_broker_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A consumer in a group, as Faust's is, then the broker stops: aiokafka's fetcher,
    coordinator and client retry many times a second, and each kind is written once."""
    offered, repeats = _Counting(), RepeatFilter()
    loggers = [logging.getLogger(name) for name in AIOKAFKA_LOGGERS]
    assert not any(logger.filters for logger in loggers), "another test left a filter"
    for logger in loggers:
        logger.addFilter(offered)  # before the repeat filter, so it sees every record
    quiet_aiokafka(repeats)
    broker = EmbeddedBroker()
    try:
        broker.start()
        topic = f"outage-{uuid.uuid4().hex[:8]}"
        ensure_topics(broker.bootstrap, [TopicSpec(topic, 2)])
        with caplog.at_level(logging.WARNING, "aiokafka"):
            asyncio.run(_consume_through_an_outage(broker, topic, offered))
    finally:
        broker.stop()
        for logger in loggers:
            logger.removeFilter(offered)
            logger.removeFilter(repeats)
    written = [r for r in caplog.records if r.name.startswith("aiokafka")]
    assert written
    assert offered.count >= 2 * len(written), "aiokafka should have retried many times"
    kinds = [repeat_kind(r) for r in written]
    assert len(set(kinds)) == len(kinds), [r.getMessage() for r in written]


async def _consume_through_an_outage(
    broker: EmbeddedBroker, topic: str, offered: _Counting
) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, group_id=topic, enable_auto_commit=False
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)  # joining the group
        assert consumer.assignment(), "the consumer never joined its group"
        await asyncio.to_thread(broker.stop)
        before = offered.count
        deadline = time.monotonic() + 30
        while offered.count - before < 30 and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
    finally:
        # With the broker gone, aiokafka's fetcher lets its own task's cancellation out.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(consumer.stop(), 10)
