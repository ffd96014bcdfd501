"""`change: rescore` in a running worker: every partition rebuilt from the retained input and
swapped in (`streams.worker.rescore.rescoring`). A real worker process on the session's broker."""

from __future__ import annotations

import pytest

from streams.backtest.simulate import generate
from streams.models.outputs import THRESHOLD_CROSSED, THRESHOLD_DROPPED
from streams.models.plan_versions import parse_plan_version
from streams.models.plans import PlanSet
from streams.models.times import format_time
from tests.worker.conftest import StartWorker
from tests.worker.expected import Scores, differences, expected_outcome, scores_from_updates
from tests.worker.harness import TopicReader, new_prefix, publish, series, wait_until
from tests.worker.plans.test_source import (
    PARTITIONS,
    TEXT,
    V1,
    _publish_version,
    _topic_worker,
    changed,
)
from tests.worker.test_replay_equivalence import assert_matches_replay, end_events

pytestmark = pytest.mark.integration


def _reached(scores: Scores, plans: PlanSet) -> set[tuple[str, str, str]]:
    """(contact, plan, threshold) for every threshold a contact's final score reaches."""
    return {
        (contact, plan.name, threshold.name)
        for (contact, name), score in scores.items()
        for plan in plans
        if plan.name == name
        for threshold in plan.thresholds
        if score >= threshold.score
    }


def test_a_rescore_equals_the_new_versions_replay_and_alerts_the_membership_differences(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    """The worker scores everything with v1; v2 (`change: rescore`) is published once it has.
    Afterwards its scores are those of a replay of every event with v2 alone, and the alerts
    caused by the rescore are exactly the thresholds entered and left between the two."""
    prefix = new_prefix()
    events = list(generate(150, 2_500, seed=41))
    events += end_events(events[-1].time, PARTITIONS)
    v1 = parse_plan_version(V1)
    text = f'version: v2\nchange: rescore\neffective_from: "{format_time(events[0].time)}"\n'
    v2 = parse_plan_version(text + changed(TEXT))
    _publish_version(kafka_bootstrap, prefix, V1)
    worker = _topic_worker(start_worker, prefix, "worker")
    worker.wait_ready()
    publish(kafka_bootstrap, worker.topics.events, events)
    assert_matches_replay(worker, kafka_bootstrap, events, v1.plans, 30)

    _publish_version(kafka_bootstrap, prefix, text + changed(TEXT))
    swaps = series("leadscore_rescore_rebuild_seconds_count", phase="swap")
    wait_until(lambda: worker.metrics().get(swaps) == PARTITIONS, 120, "every partition swapped")

    old_scores, _ = expected_outcome(events, v1.plans)
    new_scores, _ = expected_outcome(events, v2.plans)
    updates = TopicReader(kafka_bootstrap, worker.topics.updates).values()
    assert not differences(new_scores, scores_from_updates(updates, v2.plans))
    alerts = [
        alert
        for alert in TopicReader(kafka_bootstrap, worker.topics.alerts).values()
        if alert["data"]["cause"] == {"plan_change": "v2", "rescore": True}
    ]
    told = {
        (alert["subject"], alert["data"]["plan"], alert["data"]["threshold"], alert["type"])
        for alert in alerts
    }
    before, after = _reached(old_scores, v1.plans), _reached(new_scores, v2.plans)
    assert told == {(*key, THRESHOLD_CROSSED) for key in after - before} | {
        (*key, THRESHOLD_DROPPED) for key in before - after
    }
    assert len(told) == len(alerts)  # one alert per threshold entered or left, none again
    for contact in sorted({contact for contact, _ in new_scores})[::25]:
        status, body = worker.contact(contact)
        assert status == 200
        for plan in v2.plans:
            assert body["plans"][plan.name]["score"] == new_scores.get((contact, plan.name), 0)
