"""Partitions moving between two workers while events stream in: nothing lost, commits go on.

The scenario of issue 13: a worker runs alone, a second one joins mid-stream with an empty
data dir and builds standbys of the first one's partitions, the first is SIGKILLed (the second
takes its partitions over from those standbys), then the first comes back with its old data
dir and gets partitions back, and the second is SIGKILLed in turn (the first takes its
partitions over from standbys that started behind). Afterwards every score and alert equals
the backtest's, every contact answers over HTTP, and every partition's committed offset
reaches its end.
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
from tests.worker.harness import (
    EXAMPLE_PLANS,
    WorkerProcess,
    http_get,
    publish,
    series,
    wait_until,
)
from tests.worker.lead_table import assert_lead_scores_match
from tests.worker.test_replay_equivalence import assert_matches_replay, end_events

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


def test_takeovers_from_standbys_lose_nothing_and_commits_reach_the_end(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    options = {"partitions": PARTITIONS, "extra_args": ["--session-timeout", SESSION_TIMEOUT]}
    first = start_worker(name="first", **options)
    prefix = first.prefix
    stream = Stream(kafka_bootstrap, first.topics.events, seed=uuid.uuid4().int % 1000)
    second = start_worker(name="second", prefix=prefix, wait_ready=False, **options)
    wait_split(first, second, what="the second worker to join mid-stream")
    stream.goes_on()  # the second worker's standbys follow the first one's partitions

    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(lambda: owned(second) == set(range(PARTITIONS)), 120, "the first takeover")
    stream.goes_on()
    first.start()  # its old data dir: its standbys start behind
    wait_split(first, second, what="the first worker to get partitions back")
    stream.goes_on()

    assert second.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(lambda: owned(first) == set(range(PARTITIONS)), 120, "the second takeover")
    stream.goes_on()
    events = stream.finish()

    assert_matches_replay(first, kafka_bootstrap, events, load_plans(EXAMPLE_PLANS), 1)
    assert_lead_scores_match(first, kafka_bootstrap, {e.subject for e in events})

    topics = [first.topics.events, first.topics.ticks]
    group = f"{prefix}leadscore"
    try:
        wait_until(
            lambda: not committed_lag(kafka_bootstrap, group, topics),
            COMMIT_WAIT,
            "every committed offset to reach its end offset",
        )
    except AssertionError as error:
        raise AssertionError(f"{error}: {committed_lag(kafka_bootstrap, group, topics)}") from None
    commit_lag = [
        series("leadscore_commit_lag", topic=first.topics.events, partition=str(p))
        for p in range(PARTITIONS)
    ]
    wait_until(
        lambda: all(first.metrics().get(name) == 0 for name in commit_lag),
        COMMIT_WAIT,
        "the worker's commit lag to be 0 on every partition",
    )
