"""The publishing helper: CloudEvents encodings, and partitions that agree with Faust's."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.client import (
    EventPublisher,
    KeyedProducer,
    PublishError,
    binary_message,
    structured_message,
)
from streams.kafka.security import KafkaConnection
from streams.models.events import TrackingEvent, decode_kafka_message

EVENT = TrackingEvent(
    id="e-1",
    source="/test",
    type="email.clicked",
    time=1_767_225_600.25,
    subject="contact-7",
    data={"url": "https://example.com/pricing"},
)


@pytest.mark.parametrize("encode", [binary_message, structured_message])
def test_both_modes_decode_to_the_same_event(encode: object) -> None:
    key, value, headers = encode(EVENT)  # type: ignore[operator]
    assert key == b"contact-7"
    assert decode_kafka_message(key, value, headers) == EVENT


def test_binary_mode_puts_attributes_in_ce_headers() -> None:
    _, value, headers = binary_message(EVENT)
    names = dict(headers)
    assert names["ce_specversion"] == b"1.0"
    assert names["ce_subject"] == b"contact-7"
    assert names["content-type"] == b"application/json"
    assert value == b'{"url":"https://example.com/pricing"}'


@pytest.mark.integration
def test_partitions_agree_with_faust_and_aiokafka(kafka_bootstrap: str) -> None:
    topic, partitions = f"client-{uuid.uuid4().hex[:8]}", 7
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, partitions)])
    keys = [f"contact-{i}" for i in range(300)] + ["Łódź-ä", "", "x" * 300]
    with EventPublisher(kafka_bootstrap, topic) as publisher:
        for key in keys:
            publisher.publish_raw(key.encode(), b"{}", [])

    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": topic, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    landed: dict[bytes, int] = {}
    try:
        while len(landed) < len(keys):
            message = consumer.poll(10)
            assert message is not None, f"only {len(landed)} of {len(keys)} messages arrived"
            landed_key, partition = message.key(), message.partition()
            assert landed_key is not None and partition is not None
            landed[landed_key] = partition
    finally:
        consumer.close()
    every = list(range(partitions))
    faust_choice = {key.encode(): DefaultPartitioner()(key.encode(), every, every) for key in keys}
    assert landed == faust_choice
    assert len(set(landed.values())) == partitions


@pytest.mark.integration
def test_keyed_producer_waits_for_every_earlier_message_and_knows_their_offsets(
    kafka_bootstrap: str,
) -> None:
    topic = f"keyed-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2)])
    producer = KeyedProducer(KafkaConnection(kafka_bootstrap))

    async def send_then_wait() -> None:
        for number in range(30):
            await producer.send(topic, None, str(number).encode(), [], partition=number % 2)
        await producer.wait_delivered()

    asyncio.run(send_then_wait())
    producer.check()
    assert producer.acknowledged == {(topic, 0): 14, (topic, 1): 14}


@pytest.mark.integration
def test_keyed_producer_reports_refused_messages(kafka_bootstrap: str) -> None:
    producer = KeyedProducer(KafkaConnection(kafka_bootstrap), {"message.timeout.ms": 2000})
    producer.produce(f"missing-{uuid.uuid4().hex[:8]}", b"k", b"v", [])
    asyncio.run(producer.wait_delivered())
    with pytest.raises(PublishError, match="1 message"):
        producer.check()
