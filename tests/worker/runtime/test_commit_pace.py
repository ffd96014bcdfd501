from __future__ import annotations

from streams.worker.runtime.commit_pace import (
    BACKLOG_INTERVAL,
    BACKLOG_MESSAGES,
    commit_due,
    longest_interval,
)


def test_a_worker_caught_up_commits_at_every_interval() -> None:
    assert commit_due(0.1, 0.1, 0)
    assert commit_due(0.1, 0.09, BACKLOG_MESSAGES)  # a timer that woke a little early


def test_a_backlog_stretches_commits_to_the_backlog_interval() -> None:
    waiting = BACKLOG_MESSAGES + 1
    assert not commit_due(0.1, 0.1, waiting)
    assert not commit_due(0.1, BACKLOG_INTERVAL - 0.1, waiting)
    assert commit_due(0.1, BACKLOG_INTERVAL - 0.04, waiting)


def test_an_interval_longer_than_the_backlog_one_is_kept() -> None:
    assert longest_interval(5.0) == 5.0
    assert not commit_due(5.0, BACKLOG_INTERVAL, BACKLOG_MESSAGES + 1)
    assert longest_interval(0.1) == BACKLOG_INTERVAL
