"""The topics the worker creates get the retention and compaction settings it was given."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # admin does not re-export it to mypy

from streams.kafka.admin import ensure_topics
from streams.scoring import load_plans
from streams.worker.app import Worker, build_worker
from streams.worker.runtime.topic_settings import changelog_config, retention_config
from streams.worker.settings import WorkerSettings
from tests.worker.harness import EXAMPLE_PLANS, new_prefix


def test_the_erasure_bound_is_split_between_segment_roll_and_compaction_lag() -> None:
    assert changelog_config(86400.0) == {
        "cleanup.policy": "compact",
        "segment.ms": "43200000",
        "max.compaction.lag.ms": "43200000",
        "min.cleanable.dirty.ratio": "0.5",
    }
    assert retention_config(3600.0) == {"cleanup.policy": "delete", "retention.ms": "3600000"}


def _worker(tmp_path: Path, bootstrap: str, **options: float) -> Worker:
    settings = WorkerSettings(
        plans=EXAMPLE_PLANS,
        bootstrap=bootstrap,
        partitions=2,
        data_dir=tmp_path,
        topic_prefix=new_prefix(),
        **options,  # type: ignore[arg-type]
    )
    return build_worker(settings, load_plans(EXAMPLE_PLANS))


def _configs(bootstrap: str, topics: list[str], key: str) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in topics]
    described = admin.describe_configs(resources)
    return [described[resource].result()[key].value for resource in resources]


@pytest.mark.integration
def test_outputs_dlq_and_changelog_get_their_settings(kafka_bootstrap: str, tmp_path: Path) -> None:
    worker = _worker(
        tmp_path, kafka_bootstrap, output_retention=3600, dlq_retention=7200, erasure_bound=600
    )
    topics = worker.settings.topics
    changelog = worker.table.changelog_topic.get_topic_name()
    ensure_topics(kafka_bootstrap, worker.topic_specs(), replication_factor=3)

    assert _configs(
        kafka_bootstrap, [topics.alerts, topics.updates, topics.dead_letters], "retention.ms"
    ) == [
        "3600000",
        "3600000",
        "7200000",
    ]
    assert _configs(kafka_bootstrap, [changelog], "segment.ms") == ["300000"]
    assert _configs(kafka_bootstrap, [changelog], "max.compaction.lag.ms") == ["300000"]
    assert _configs(kafka_bootstrap, [changelog], "cleanup.policy") == ["compact"]

    # A later start with another bound changes the changelog; an output's retention is only
    # set when the worker creates the topic (the topic may be shared, and shortening it deletes).
    later = dataclasses.replace(worker.settings, erasure_bound=60, output_retention=60)
    ensure_topics(kafka_bootstrap, build_worker(later, worker.live.history).topic_specs())
    assert _configs(kafka_bootstrap, [changelog], "max.compaction.lag.ms") == ["30000"]
    assert _configs(kafka_bootstrap, [topics.alerts], "retention.ms") == ["3600000"]
