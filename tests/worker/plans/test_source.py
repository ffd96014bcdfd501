"""Workers taking new plan versions while they run: from the plans topic, or from their file
on SIGHUP. Real worker processes on the session's broker."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from streams.backtest.simulate import generate
from streams.kafka.client import KeyedProducer
from streams.kafka.security import KafkaConnection
from streams.models.plan_versions import PlanHistory, parse_plan_version
from streams.models.times import format_time
from streams.worker.commands.publish import publish_version
from streams.worker.plans.topic import FORMAT, plans_topic
from tests.support import event
from tests.worker.conftest import StartWorker
from tests.worker.harness import (
    EXAMPLE_PLANS,
    TopicReader,
    WorkerProcess,
    new_prefix,
    publish,
    series,
    wait_until,
)
from tests.worker.test_replay_equivalence import assert_matches_replay, end_events

pytestmark = pytest.mark.integration

TEXT = EXAMPLE_PLANS.read_text()
V1 = 'version: v1\neffective_from: "2000-01-01T00:00:00Z"\n' + TEXT
PARTITIONS = 3
CONTACTS = 200
EVENTS = 4_000


def changed(text: str) -> str:
    """The example plans with other points and thresholds (each edit must apply)."""
    for old, new in (
        ("points: 10, limit", "points: 25, limit"),  # opened
        ("{name: warm, score: 100}", "{name: warm, score: 80}"),
        ("equals: Kraków, points: 6", "equals: Kraków, points: 9"),  # re-evaluated at the switch
    ):
        assert old in text
        text = text.replace(old, new)
    return text


def _publish_version(bootstrap: str, prefix: str, text: str) -> None:
    publish_version(KafkaConnection(bootstrap), prefix, parse_plan_version(text), time.time(), 1)


def _reloads(worker: WorkerProcess, result: str) -> float:
    return worker.metrics().get(series("leadscore_plan_reloads_total", result=result), 0.0)


def _knows(worker: WorkerProcess, label: str) -> bool:
    return any(
        name.startswith("leadscore_plan_version_info{") and f'version="{label}"' in name
        for name in worker.metrics()
    )


def _topic_worker(start_worker: StartWorker, prefix: str, name: str) -> WorkerProcess:
    return start_worker(
        name=name,
        prefix=prefix,
        plans=None,
        partitions=PARTITIONS,
        extra_args=["--plans-topic"],
        wait_ready=False,
    )


def test_a_forward_change_published_mid_stream_equals_the_replay_with_that_history(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    """Two workers of one group follow the plans topic under `--clock event`. v2 is published
    after the first half of the events and takes over at the first event of the second half.

    The contract that makes the stream equal a replay with the same plan history: a version
    is known to every worker of the group before events past its start are produced. So the
    test waits until both workers report v2 in `leadscore_plan_version_info` before it
    publishes the second half."""
    prefix = new_prefix()
    events = list(generate(CONTACTS, EVENTS, seed=31))
    start = events[len(events) // 2].time
    v2 = f'version: v2\neffective_from: "{format_time(start)}"\n' + changed(TEXT)
    before = [e for e in events if e.time < start]
    after = [e for e in events if e.time >= start] + end_events(events[-1].time, PARTITIONS)

    _publish_version(kafka_bootstrap, prefix, V1)
    workers = [_topic_worker(start_worker, prefix, name) for name in ("a", "b")]
    for worker in workers:
        worker.wait_ready()
    publish(kafka_bootstrap, workers[0].topics.events, before)
    _publish_version(kafka_bootstrap, prefix, v2)
    for worker in workers:
        wait_until(lambda w=worker: _knows(w, "v2"), 60, "both workers to know v2")  # type: ignore[misc]
    publish(kafka_bootstrap, workers[0].topics.events, after)

    history = PlanHistory((parse_plan_version(V1), parse_plan_version(v2)))
    assert_matches_replay(workers[0], kafka_bootstrap, before + after, history, 20)
    updates = TopicReader(kafka_bootstrap, workers[0].topics.updates).values()
    switched = [u["data"] for u in updates if u["data"].get("cause") == {"plan_change": "v2"}]
    assert switched and all(data["plan_version"] == "v2" for data in switched)


def test_a_version_no_worker_can_read_is_skipped_and_scoring_goes_on(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    prefix = new_prefix()
    _publish_version(kafka_bootstrap, prefix, V1)
    worker = _topic_worker(start_worker, prefix, "worker")
    worker.wait_ready()
    producer = KeyedProducer(KafkaConnection(kafka_bootstrap))
    newer = {"format": FORMAT + 1, "effective_from": "2001-01-01T00:00:00Z", "text": "?"}
    invalid = {"format": FORMAT, "effective_from": "2001-01-01T00:00:00Z", "text": "plans: 3"}
    producer.produce(plans_topic(prefix), b"v9", orjson.dumps(newer), [], 0)
    producer.produce(plans_topic(prefix), b"v8", orjson.dumps(invalid), [], 0)
    producer.flush()

    wait_until(
        lambda: _reloads(worker, "newer-format") == 1 and _reloads(worker, "invalid") == 1,
        60,
        "both records to be refused",
    )
    assert worker.process is not None
    worker.process.send_signal(signal.SIGHUP)  # nothing to reload: logged, and ignored
    publish(kafka_bootstrap, worker.topics.events, [event("email.clicked", 0, contact="c")])
    assert wait_until(lambda: worker.score("c"), 60, "the click to be scored") == 20
    assert worker.metrics()[series("leadscore_plan_version_info", state="current", version="v1")]


def test_sighup_reloads_the_plans_file_with_the_same_rules(
    start_worker: StartWorker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    plans = tmp_path / "plans.yaml"
    plans.write_text("version: v1\n" + TEXT)
    worker = start_worker(plans=plans, partitions=1)
    updates = TopicReader(kafka_bootstrap, worker.topics.updates)

    def opened(minute: int) -> None:
        publish(
            kafka_bootstrap,
            worker.topics.events,
            [event("email.opened", minute * 60.0, contact="c")],
        )

    def reload(result: str) -> None:
        assert worker.process is not None
        worker.process.send_signal(signal.SIGHUP)
        wait_until(lambda: _reloads(worker, result) == 1, 60, f"a reload counted {result}")

    opened(0)
    wait_until(lambda: worker.score("c") == 10, 60, "v1's 10 points")
    plans.write_text("version: v2\n" + changed(TEXT))  # takes over at the stream time: T0
    reload("installed")
    opened(1)
    wait_until(lambda: worker.score("c") == 35, 60, "v2's 25 points on top of v1's 10")
    assert [u["data"]["plan_version"] for u in updates.values()] == ["v1", "v2"]

    reload("unchanged")
    plans.write_text("version: v3\nplans: 3\n")
    reload("invalid")
    opened(2)
    wait_until(lambda: worker.score("c") == 60, 60, "v2 still scoring")
    assert worker.metrics()[series("leadscore_plan_version_info", state="current", version="v2")]


def test_a_worker_without_a_published_version_refuses_to_start(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    worker = _topic_worker(start_worker, new_prefix(), "worker")
    assert worker.process is not None
    assert worker.process.wait(60) == 2
    assert "does not exist: publish one with `leadscore plans publish" in worker.log()
