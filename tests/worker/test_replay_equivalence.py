"""The worker's results equal a plain replay of the same events, also across restarts.

The events are `leadscore simulate`'s population. The worker runs with `--clock event`, so its
timers fire at the same stream times as the replay's; one extra event per partition at the
last event's time brings every partition's stream time to the end, where the replay also
advances every contact.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from streams.backtest.simulate import generate
from streams.models.events import TrackingEvent
from streams.models.plan_versions import PlanHistory
from streams.scoring import PlanSet, load_plans
from tests.worker.conftest import StartWorker
from tests.worker.expected import differences, expected_outcome, scores_from_updates
from tests.worker.harness import (
    EXAMPLE_PLANS,
    TopicReader,
    WorkerProcess,
    key_on_partition,
    publish,
    wait_until,
)
from tests.worker.lead_table import assert_lead_scores_match

pytestmark = pytest.mark.integration

EVENTS = 10_000
CONTACTS = 400
PARTITIONS = 3


def simulated_stream(seed: int) -> list[TrackingEvent]:
    """Simulated events, then one `test.end` event per partition at the last event's time."""
    events = list(generate(CONTACTS, EVENTS, seed=seed))
    return events + end_events(events[-1].time, PARTITIONS)


def end_events(end: float, partitions: int) -> list[TrackingEvent]:
    """One `test.end` event per partition at `end`: every partition's stream time gets there."""
    return [
        TrackingEvent(
            id=f"end-{partition}",
            source="/test",
            type="test.end",
            time=end,
            subject=key_on_partition(partition, partitions, "end"),
        )
        for partition in range(partitions)
    ]


def assert_matches_replay(
    worker: WorkerProcess,
    bootstrap: str,
    events: list[TrackingEvent],
    history: PlanSet | PlanHistory,
    http_every: int = CONTACTS // 10,
) -> None:
    """Wait until score-updates and sales-alerts add up to the replay's scores and alert ids;
    then every `http_every`-th contact must answer over HTTP with the replay's scores."""
    expected_scores, expected_alerts = expected_outcome(events, history)
    plans = history.latest.plans if isinstance(history, PlanHistory) else history
    updates = TopicReader(bootstrap, worker.topics.updates)
    alerts = TopicReader(bootstrap, worker.topics.alerts)

    def matches() -> bool:
        scores = scores_from_updates(updates.values(), plans)
        return (
            not differences(expected_scores, scores)
            and {alert["id"] for alert in alerts.values()} == expected_alerts
        )

    try:
        wait_until(matches, 120, "the worker's scores and alerts to equal the replay's", 1.0)
    except AssertionError:
        scores = scores_from_updates(updates.values(), plans)
        alert_ids = {alert["id"] for alert in alerts.values()}
        pytest.fail(
            "worker differs from replay:\n"
            + "\n".join(differences(expected_scores, scores))
            + f"\nalerts missing: {len(expected_alerts - alert_ids)}, "
            f"unexpected: {len(alert_ids - expected_alerts)}\n{worker.log()}"
        )
    for contact_id in sorted({contact for contact, _ in expected_scores})[::http_every]:
        status, body = worker.contact(contact_id)
        assert status == 200, f"{contact_id}: HTTP {status}"
        for plan in plans:
            score = body["plans"][plan.name]["score"]
            assert score == expected_scores[(contact_id, plan.name)], f"{contact_id}/{plan.name}"


def test_simulated_stream_equals_backtest(start_worker: StartWorker, kafka_bootstrap: str) -> None:
    worker = start_worker(partitions=PARTITIONS)
    events = simulated_stream(seed=11)
    publish(kafka_bootstrap, worker.topics.events, events)
    assert_matches_replay(worker, kafka_bootstrap, events, load_plans(EXAMPLE_PLANS))


@pytest.mark.parametrize(
    ("signum", "fresh_data_dir"),
    [
        pytest.param(signal.SIGTERM, False, id="sigterm"),
        pytest.param(signal.SIGKILL, False, id="sigkill"),
        pytest.param(signal.SIGKILL, True, id="sigkill-recover-from-changelog"),
    ],
)
def test_restart_mid_stream_loses_and_doubles_nothing(
    start_worker: StartWorker, kafka_bootstrap: str, signum: int, fresh_data_dir: bool
) -> None:
    first = start_worker(name="first", partitions=PARTITIONS)
    events = simulated_stream(seed=23)
    publish(kafka_bootstrap, first.topics.events, events)
    wait_until(lambda: first.consumed() >= len(events) // 3, 60, "a third of the stream")

    code = first.stop(signum)
    assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL), first.log()
    restart: Callable[..., WorkerProcess] = start_worker
    second = (
        restart(name="second", prefix=first.prefix, partitions=PARTITIONS)
        if fresh_data_dir
        else first.start()
    )
    assert_matches_replay(second, kafka_bootstrap, events, load_plans(EXAMPLE_PLANS))
    # The leads index comes back with the state (from the changelog into an empty data dir).
    assert_lead_scores_match(second, kafka_bootstrap, {e.subject for e in events})
