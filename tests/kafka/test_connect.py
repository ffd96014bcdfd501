"""`lead-scores` into PostgreSQL through a real Kafka Connect worker and Debezium's JDBC sink,
configured from the files in `deploy/connect/`, fed by a real leadscore worker.

The integration test costs a Connect JVM (7-12 s to a running task on this shared machine) and
a PostgreSQL cluster (1-3 s); it skips, saying why, where PostgreSQL is not installed (.ci/run installs
it on CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from streams.kafka.broker import POM as BROKER_POM
from streams.kafka.broker import kafka_version
from streams.kafka.connect import POM as CONNECT_POM
from streams.kafka.connect import (
    SINK_CONFIG,
    WORKER_CONFIG,
    ConnectError,
    ConnectorState,
    EmbeddedConnect,
    read_properties,
    trace_causes,
)
from streams.models.plan_versions import parse_plan_version
from streams.models.times import format_time
from tests.kafka.test_broker import group_alive
from tests.postgres import Postgres, PostgresMissingError, postgres_cluster
from tests.support import event
from tests.worker.harness import WorkerProcess, new_prefix, publish, wait_until
from tests.worker.plans.test_source import PARTITIONS, TEXT, V1, _publish_version, changed

PLAN = "lead-score"
ROWS_TIMEOUT = 60.0
RESCORE_TIMEOUT = 120.0


# --- unit tests: no JVM ------------------------------------------------------------------------


def test_the_shipped_configs_read_committed_connect_json_and_upsert_by_key() -> None:
    worker, sink = read_properties(WORKER_CONFIG), read_properties(SINK_CONFIG)
    assert worker["value.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert worker["value.converter.schemas.enable"] == "true"
    assert worker["key.converter"] == "org.apache.kafka.connect.storage.StringConverter"
    assert worker["consumer.isolation.level"] == "read_committed"
    assert sink["topics"] == "lead-scores"
    assert (sink["insert.mode"], sink["primary.key.mode"], sink["delete.enabled"]) == (
        "upsert",
        "record_key",
        "true",
    )
    assert sink["transforms.keyStruct.type"].endswith("HoistField$Key")


def test_connect_runs_the_brokers_kafka_version() -> None:
    """One Kafka version for the broker and Connect: the Connect cache is keyed by the broker's."""
    assert kafka_version(CONNECT_POM) == kafka_version(BROKER_POM)


def test_read_properties_skips_comments_and_keeps_equals_signs_in_values(tmp_path: Path) -> None:
    path = tmp_path / "a.properties"
    path.write_text("# a comment\n\n! another\nname = sink\nurl=jdbc:x?a=b\n")
    assert read_properties(path) == {"name": "sink", "url": "jdbc:x?a=b"}


def test_a_failed_task_is_reported_with_its_causes_and_without_its_frames() -> None:
    trace = (
        "org.apache.kafka.connect.errors.ConnectException: Tolerance exceeded in error handler\n"
        "\tat org.apache.kafka.connect.runtime.errors.RetryWithToleranceOperator.execute(R.java:1)\n"
        "Caused by: org.apache.kafka.connect.errors.DataException: JsonConverter with "
        'schemas.enable requires "schema" and "payload" fields\n'
        "\t... 14 more"
    )
    status = {"connector": {"state": "RUNNING"}, "tasks": [{"state": "FAILED", "trace": trace}]}
    state = ConnectorState.from_status(status)
    assert not state.running
    assert state.failure == trace
    assert trace_causes(trace).splitlines() == [trace.splitlines()[0], trace.splitlines()[2]]


def test_a_connector_without_tasks_is_not_running_yet() -> None:
    state = ConnectorState.from_status({"connector": {"state": "RUNNING"}, "tasks": []})
    assert not state.running
    assert state.failure is None


# --- integration: a worker, Connect and PostgreSQL ---------------------------------------------


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    try:
        with postgres_cluster() as cluster:
            yield cluster
    except PostgresMissingError as missing:
        pytest.skip(f"{missing} (.ci/run installs it on CI)")


def _sink_config(postgres: Postgres, prefix: str) -> dict[str, str]:
    return read_properties(SINK_CONFIG) | {
        "name": f"{prefix}sink",
        "topics": f"{prefix}lead-scores",
        "connection.url": postgres.jdbc_url,
        "connection.username": "leadscore",
        "connection.password": "",
    }


def _rows(postgres: Postgres) -> dict[str, dict[str, Any]]:
    try:
        rows = postgres.query("SELECT * FROM lead_scores")
    except RuntimeError:  # the sink creates the table with its first record
        return {}
    return {row["contact_id"]: row for row in rows}


@pytest.mark.integration
def test_a_connect_worker_that_cannot_load_its_connector_says_why(
    kafka_bootstrap: str,
) -> None:
    config = read_properties(SINK_CONFIG) | {"connector.class": "org.example.NoSuchSink"}
    with pytest.raises(ConnectError, match="NoSuchSink"):
        EmbeddedConnect(kafka_bootstrap, config, start_timeout=60).start()


@pytest.mark.integration
def test_lead_scores_reach_postgres_one_row_per_contact_erased_gone_rescore_visible(
    kafka_bootstrap: str, postgres: Postgres, tmp_path: Path
) -> None:
    prefix = new_prefix()
    _publish_version(kafka_bootstrap, prefix, V1)
    worker = WorkerProcess(
        kafka_bootstrap,
        prefix,
        tmp_path / "data",
        tmp_path / "worker.log",
        partitions=PARTITIONS,
        plans=None,
        extra_args=["--plans-topic", "--lead-scores-format", "connect-json"],
    )
    # opened +10 (25 after the rescore), clicked +20, replied +30; warm at 100 (80 after it).
    activity = {
        "warm": ["email.opened", "email.clicked", "email.replied", "email.clicked"],  # 80
        "opener": ["email.opened", "email.opened"],  # 20
        "gone": ["email.clicked"],  # 20, then erased
    }
    events = [
        event(kind, minute * 60, contact=contact)
        for contact, kinds in activity.items()
        for minute, kind in enumerate(kinds)
    ]
    sink = EmbeddedConnect(kafka_bootstrap, _sink_config(postgres, prefix))
    try:
        # Connect starts while the worker recovers, once the worker has made the topic.
        worker.start(wait_ready=False)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        topic = worker.topics.leads
        wait_until(lambda: topic in admin.list_topics(timeout=5).topics, 60, f"{topic} created")
        sink.start()
        worker.wait_ready()
        publish(kafka_bootstrap, worker.topics.events, events)

        def settled() -> dict[str, dict[str, Any]] | None:
            rows = _rows(postgres)
            want = {c: worker.score(c, PLAN) for c in activity}
            have = {c: row[f"score_{PLAN}"] for c, row in rows.items()}
            return rows if have == want and None not in want.values() else None

        rows = wait_until(settled, ROWS_TIMEOUT, "one row per contact, as the worker has it")
        assert [rows[c][f"score_{PLAN}"] for c in activity] == [80, 20, 20]
        assert rows["warm"][f"thresholds_{PLAN}"] == []
        assert rows["warm"]["plans"][PLAN] == {"score": 80, "thresholds": [], "plan_version": "v1"}
        assert rows["warm"]["last_activity"] == "2026-01-01T00:03:00+00:00"
        assert rows["warm"]["plan_version"] == "v1"

        publish(
            kafka_bootstrap, worker.topics.events, [event("contact.erased", 600, contact="gone")]
        )
        wait_until(lambda: set(_rows(postgres)) == {"warm", "opener"}, ROWS_TIMEOUT, "gone erased")

        rescore = f'version: v2\nchange: rescore\neffective_from: "{format_time(events[0].time)}"\n'
        parse_plan_version(rescore + changed(TEXT))  # valid, or the worker would only log it
        _publish_version(kafka_bootstrap, prefix, rescore + changed(TEXT))

        def rescored() -> dict[str, dict[str, Any]] | None:
            rows = _rows(postgres)
            done = all(row["plans"][PLAN]["plan_version"] == "v2" for row in rows.values())
            return rows if done and set(rows) == {"warm", "opener"} else None

        rows = wait_until(rescored, RESCORE_TIMEOUT, "the rescore in the table")
        assert (rows["warm"][f"score_{PLAN}"], rows["opener"][f"score_{PLAN}"]) == (95, 50)
        assert rows["warm"][f"thresholds_{PLAN}"] == ["warm"]
        # What a CRM sync asks (deploy/README.md): the contacts at or above a threshold.
        warm = postgres.query(
            f"SELECT contact_id FROM lead_scores WHERE 'warm' = ANY(\"thresholds_{PLAN}\")"
        )
        assert warm == [{"contact_id": "warm"}]
        assert worker.score("warm", PLAN) == 95
    finally:
        pid = sink.pid
        sink.stop()
        worker.ensure_stopped()
    assert pid is not None and not group_alive(pid)  # no Connect JVM outlives the test
