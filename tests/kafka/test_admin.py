"""Topic creation against the session broker: idempotent, and strict about partition counts."""

from __future__ import annotations

import logging
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


def test_caps_the_replication_factor_at_the_broker_count(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = _name("alerts")
    with caplog.at_level(logging.WARNING, logger="streams.kafka.admin"):
        ensure_topics(kafka_bootstrap, [TopicSpec(name, 2)], replication_factor=3)
    assert "replication factor 3 capped at 1: the cluster has only 1 broker(s)" in caplog.text
    topic = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert [len(p.replicas) for p in topic[name].partitions.values()] == [1, 1]


def test_enforced_configs_are_set_on_existing_topics_and_others_left_alone(
    kafka_bootstrap: str,
) -> None:
    changelog, alerts = _name("changelog"), _name("alerts")
    ensure_topics(
        kafka_bootstrap,
        [
            TopicSpec(changelog, 1, config={"segment.ms": "60000"}, enforce_config=True),
            TopicSpec(alerts, 1, config={"retention.ms": "60000"}),
        ],
    )
    ensure_topics(
        kafka_bootstrap,
        [
            TopicSpec(changelog, 1, config={"segment.ms": "30000"}, enforce_config=True),
            TopicSpec(alerts, 1, config={"retention.ms": "30000"}),
        ],
    )
    assert _config(kafka_bootstrap, changelog, "segment.ms") == "30000"
    assert _config(kafka_bootstrap, alerts, "retention.ms") == "60000"


def _config(bootstrap: str, topic: str, key: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    value: str = admin.describe_configs([resource])[resource].result()[key].value
    return value
