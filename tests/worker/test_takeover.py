"""Partitions moving between two workers while events stream in: nothing lost, commits go on.

The scenario of issue 13: a worker runs alone, a second one joins mid-stream with an empty
data dir and builds standbys of the first one's partitions, the first is SIGKILLed (the second
takes its partitions over from those standbys), then the first comes back with its old data
dir and gets partitions back. Afterwards every score and alert equals the backtest's, every
contact answers over HTTP, and every partition's committed offset reaches its end.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
import uuid
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.backtest.simulate import generate
from streams.models.events import TrackingEvent
from streams.scoring import load_plans
from tests.worker.conftest import StartWorker
from tests.worker.expected import differences, expected_outcome, scores_from_updates
from tests.worker.harness import (
    EXAMPLE_PLANS,
    TopicReader,
    WorkerProcess,
    http_get,
    publish,
    wait_until,
)
from tests.worker.test_replay_equivalence import end_events

pytestmark = pytest.mark.integration

PARTITIONS = 4
CONTACTS = 400
RATE = 300
"""Events per second, as in the report: the moves happen while the stream is flowing."""
PHASE = 3 * RATE
"""Events streamed between two moves (standbys fill, the new owner gets going)."""
EVENTS = 30_000
"""At most this many are streamed (100 s): the test finishes the stream after the moves."""
SESSION_TIMEOUT = "6"
"""Seconds before the group notices the killed worker (the harness's default is 10)."""
COMMIT_WAIT = 30.0
"""Seconds for the committed offsets to reach the end once everything is processed: a few
commit intervals (Faust's default is 2.8 s)."""


class Stream:
    """Publishes simulated events at `RATE` per second from a thread until `finish()`, so the
    test can move partitions mid-stream however long the workers take to start."""

    def __init__(self, bootstrap: str, topic: str, seed: int) -> None:
        self.sent: list[TrackingEvent] = []
        self._events = generate(CONTACTS, EVENTS, seed=seed)
        self._bootstrap, self._topic = bootstrap, topic
        self._finish = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        step = RATE // 10
        started = time.monotonic()
        try:
            while not self._finish.is_set():
                chunk = list(itertools.islice(self._events, step))
                if not chunk:
                    break
                publish(self._bootstrap, self._topic, chunk)
                self.sent += chunk
                pause = started + len(self.sent) / RATE - time.monotonic()
                if pause > 0:
                    self._finish.wait(pause)  # paces the producer; no result is waited for
            end = end_events(self.sent[-1].time, PARTITIONS)
            publish(self._bootstrap, self._topic, end)
            self.sent += end
        except BaseException as error:  # reported by `finish`
            self._error = error

    def goes_on(self, count: int = PHASE) -> None:
        """Wait until `count` more events were sent."""
        target = len(self.sent) + count
        wait_until(
            lambda: len(self.sent) >= target or not self._thread.is_alive(), 120, f"{target} sent"
        )

    def finish(self) -> list[TrackingEvent]:
        """Stop, send the end events, and return everything sent."""
        self._finish.set()
        self._thread.join(60)
        if self._error is not None:
            raise self._error
        return self.sent


def owned(worker: WorkerProcess) -> set[int]:
    status, body = http_get(worker.url + "/readyz")
    return set(body["partitions"]) if status == 200 else set()


def wait_split(*workers: WorkerProcess, what: str) -> None:
    def split() -> bool:
        parts = [owned(w) for w in workers]
        every = set().union(*parts)
        return all(parts) and every == set(range(PARTITIONS)) and sum(map(len, parts)) == 4

    wait_until(split, 120, what)


def committed_lag(bootstrap: str, group: str, topics: Sequence[str]) -> dict[str, int]:
    """End offset minus the group's committed offset, per `topic[partition]` still behind."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        behind = {}
        for tp in consumer.committed(tps, timeout=10):
            _, end = consumer.get_watermark_offsets(tp, timeout=10)
            done = max(tp.offset, 0)
            if end > done:
                behind[f"{tp.topic}[{tp.partition}]"] = end - done
        return behind
    finally:
        consumer.close()


def test_a_takeover_from_standbys_and_a_return_lose_nothing_and_commit_to_the_end(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    options = {"partitions": PARTITIONS, "extra_args": ["--session-timeout", SESSION_TIMEOUT]}
    first = start_worker(name="first", **options)
    prefix = first.prefix
    stream = Stream(kafka_bootstrap, first.topics.events, seed=uuid.uuid4().int % 1000)
    stream.goes_on()
    second = start_worker(name="second", prefix=prefix, **options)  # standbys of first's
    wait_split(first, second, what="the partitions split between the two workers")
    stream.goes_on()

    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(lambda: owned(second) == set(range(PARTITIONS)), 120, "the takeover")
    stream.goes_on()
    first.start()
    wait_split(first, second, what="the first worker to get partitions back")
    stream.goes_on()
    events = stream.finish()

    plans = load_plans(EXAMPLE_PLANS)
    expected_scores, expected_alerts = expected_outcome(events, plans)
    updates = TopicReader(kafka_bootstrap, first.topics.updates)
    alerts = TopicReader(kafka_bootstrap, first.topics.alerts)

    def matches() -> bool:
        scores = scores_from_updates(updates.values(), plans)
        return (
            not differences(expected_scores, scores)
            and {alert["id"] for alert in alerts.values()} == expected_alerts
        )

    try:
        wait_until(matches, 120, "scores and alerts to equal the backtest's", 1.0)
    except AssertionError:
        alert_ids = {alert["id"] for alert in alerts.values()}
        pytest.fail(
            "\n".join(differences(expected_scores, scores_from_updates(updates.values(), plans)))
            + f"\nalerts missing: {len(expected_alerts - alert_ids)}, "
            f"unexpected: {len(alert_ids - expected_alerts)}"
        )
    wrong = []
    for contact_id in sorted({contact for contact, _ in expected_scores}):
        status, body = first.contact(contact_id)
        if status != 200:
            wrong.append(f"{contact_id}: HTTP {status}")
            continue
        for plan in plans:
            got, want = body["plans"][plan.name]["score"], expected_scores[(contact_id, plan.name)]
            if got != want:
                wrong.append(f"{contact_id}/{plan.name}: HTTP says {got}, expected {want}")
    assert not wrong, "\n".join(wrong[:20])

    topics = [first.topics.events, first.topics.ticks]
    group = f"{prefix}leadscore"
    wait_until(
        lambda: not committed_lag(kafka_bootstrap, group, topics),
        COMMIT_WAIT,
        "every committed offset to reach its end offset",
    )
