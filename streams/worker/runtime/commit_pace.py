"""When the worker commits: every commit interval when caught up, less often while a backlog
is worked off.

A commit ends the worker's transaction (`streams.worker.runtime.fencing`): it persists the states
written since the last one, sends them to the changelog, waits for every output to be
acknowledged and commits the offsets, all while no message is handled. When caught up, the
interval is the floor of what a `read_committed` reader waits for an output, so it stays
short (0.1 s by default). When thousands of messages are waiting, the last of them wait for
the whole backlog anyway, and each commit's fixed cost only makes the backlog last longer:
then the worker commits at most every `BACKLOG_INTERVAL` instead (bench/README.md has the
figures). It goes back to the short interval as soon as the backlog is gone.
"""

from __future__ import annotations

from typing import Final

BACKLOG_INTERVAL: Final = 1.0
"""Seconds between commits while a backlog is worked off (never shorter than the interval)."""
BACKLOG_MESSAGES: Final = 1_000
"""Input messages waiting (fetchable and not yet handled) above which there is a backlog:
about ten times what a worker caught up at 1,000 events/s has in flight."""


def longest_interval(interval: float) -> float:
    """The most time between two commits, for the transaction timeout."""
    return max(interval, BACKLOG_INTERVAL)


def commit_due(interval: float, since_commit: float, waiting: int) -> bool:
    """Whether to commit now, `since_commit` seconds after the last commit, with `waiting`
    input messages not yet handled; asked every `interval` seconds (half an interval of
    slack: a timer that wakes a little early must not wait a whole interval more)."""
    return waiting <= BACKLOG_MESSAGES or since_commit >= longest_interval(interval) - interval / 2
