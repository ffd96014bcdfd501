"""Topic creation against the session broker: idempotent, and strict about partition counts."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # admin does not re-export it to mypy

from streams.kafka.admin import TopicMismatchError, TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


def _name(stem: str) -> str:
    return f"admin-{uuid.uuid4().hex[:8]}-{stem}"


def test_creates_missing_topics_once(kafka_bootstrap: str) -> None:
    specs = [
        TopicSpec(_name("events"), 3),
        TopicSpec(_name("changelog"), 3, config={"cleanup.policy": "compact"}),
    ]
    assert ensure_topics(kafka_bootstrap, specs) == [spec.name for spec in specs]
    assert ensure_topics(kafka_bootstrap, specs) == []

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert [len(topics[spec.name].partitions) for spec in specs] == [3, 3]
    resource = ConfigResource(ConfigResource.Type.TOPIC, specs[1].name)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"


def test_refuses_a_copartitioned_topic_with_another_partition_count(kafka_bootstrap: str) -> None:
    events, alerts = _name("events"), _name("alerts")
    ensure_topics(kafka_bootstrap, [TopicSpec(events, 2), TopicSpec(alerts, 5)])
    specs = [TopicSpec(events, 4), TopicSpec(alerts, 4, copartitioned=False)]
    with pytest.raises(TopicMismatchError) as raised:
        ensure_topics(kafka_bootstrap, specs)
    message = str(raised.value)
    assert f"{events}: 2 partitions, expected 4" in message
    assert alerts not in message.split("\n")[1]  # not co-partitioned: any count will do
    assert "--partitions" in message
