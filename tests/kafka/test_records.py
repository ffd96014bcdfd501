"""Header names that are not UTF-8 are read by both clients instead of stopping the reader."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.memory_records import MemoryRecords
from confluent_kafka import Consumer, TopicPartition

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.records import HeaderNameError, TolerantRecords, confluent_headers
from tests.kafka.raw_records import RawName, build_batch, send_batches

BAD = RawName(b"x-\xff")
RECORDS = [
    (b"k0", b"v0", [("ok", b"1"), ("null", None)]),
    (b"k1", b"v1", [("ok", b"1"), (BAD, b"2"), ("null", None)]),
    (b"k2", None, []),
    (None, b"v3", [(RawName(b"ce_\xc3("), None)]),
    (b"k4", b"v4", [("last", b"4")]),
]
SURROGATES = [
    [("ok", b"1"), ("null", None)],
    [("ok", b"1"), ("x-\udcff", b"2"), ("null", None)],
    [],
    [("ce_\udcc3(", None)],
    [("last", b"4")],
]
"""What the worker reads: names that are not UTF-8 kept losslessly, as surrogates."""


def _read(records: MemoryRecords | TolerantRecords) -> list[tuple[object, ...]]:
    read = []
    while records.has_next():
        batch = records.next_batch()
        read += [(r.offset, r.key, r.value, list(r.headers)) for r in batch]
    return read


@pytest.mark.parametrize("compression", [0, 1])  # none, gzip (read again decompressed)
def test_a_batch_with_names_that_are_not_utf8_is_read_whole(compression: int) -> None:
    raw = build_batch(RECORDS, compression) * 2  # two batches: the second read after the first
    with pytest.raises(UnicodeDecodeError):  # aiokafka's compiled reader, as it is
        _read(MemoryRecords(raw))
    expected = [
        (i, k, v, h) for i, ((k, v, _), h) in enumerate(zip(RECORDS, SURROGATES, strict=True))
    ]
    assert _read(TolerantRecords(raw)) == expected * 2


def test_a_batch_without_such_names_stays_with_the_compiled_reader() -> None:
    records = TolerantRecords(build_batch([(b"k", b"v", [("n", None)])]))
    batch = records.next_batch()
    assert isinstance(batch._batch, DefaultRecordBatch) and batch.base_offset == 0
    assert [(r.key, list(r.headers)) for r in batch] == [(b"k", [("n", None)])]


@pytest.mark.integration
def test_confluent_headers_refuses_such_names_every_time(kafka_bootstrap: str) -> None:
    """confluent-kafka's `headers()` left the error set: it surfaced later, anywhere, once
    CPython specialised the call (after a few calls), and a second call crashed the process."""
    topic = f"raw-names-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 1)])
    asyncio.run(send_batches(kafka_bootstrap, topic, [(0, RECORDS * 10)]))
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": topic, "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        read: list[object] = []
        while len(read) < len(RECORDS) * 10:
            message = consumer.poll(10)
            assert message is not None and message.error() is None
            try:
                read.append(confluent_headers(message))
            except HeaderNameError:
                read.append("refused")
    finally:
        consumer.close()
    one = [[("ok", b"1"), ("null", None)], "refused", None, "refused", [("last", b"4")]]
    assert read == one * 10
