"""Exactly once for `read_committed` readers: a worker killed at random moments while it
scores (SIGKILL, no chance to commit or abort anything) and restarted, on its own data
directory or on a fresh one as another machine would, still publishes every alert and every
score update once, and its final scores are the backtest's.

Why it holds: outputs, changelog records and input offsets commit in one transaction
(`streams.worker.runtime.fencing`), so what a killed worker had sent since its last commit is aborted
(at once by its successor on the same directory, by the broker's transaction timeout
otherwise) and sent again, once, by whoever scores those events next.
"""

from __future__ import annotations

import random
import signal
from collections import Counter

import pytest

from streams.scoring import load_plans
from tests.worker.conftest import StartWorker
from tests.worker.harness import EXAMPLE_PLANS, TopicReader, WorkerProcess, publish, wait_until
from tests.worker.test_replay_equivalence import PARTITIONS, assert_matches_replay, simulated_stream

pytestmark = pytest.mark.integration

KILLS = 4


def test_kill_9_at_random_moments_repeats_no_output(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    rng = random.Random(47)
    worker = start_worker(name="run-0", partitions=PARTITIONS)
    prefix = worker.prefix
    events = simulated_stream(seed=29)
    publish(kafka_bootstrap, worker.topics.events, events)
    for kill in range(1, KILLS + 1):
        # Any moment: right after the start (recovery, the first transaction), or mid-stream.
        moment = rng.randint(1, len(events) // KILLS)

        def scored(scoring: WorkerProcess = worker, moment: int = moment) -> bool:
            return scoring.consumed() >= moment

        wait_until(scored, 90, f"{moment} events scored", 0.05)
        assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
        if kill % 2:  # the same data directory: its successor aborts what it left open
            worker.start()
        else:  # another directory, as on another machine: the broker's timeout aborts it
            worker = start_worker(name=f"run-{kill}", prefix=prefix, partitions=PARTITIONS)

    plans = load_plans(EXAMPLE_PLANS)
    assert_matches_replay(worker, kafka_bootstrap, events, plans)
    for topic in (worker.topics.updates, worker.topics.alerts):
        ids = Counter(output["id"] for output in TopicReader(kafka_bootstrap, topic).values())
        repeated = {output_id: n for output_id, n in ids.items() if n > 1}
        assert not repeated, f"{len(repeated)} ids repeated on {topic}, e.g. {list(repeated)[:5]}"
