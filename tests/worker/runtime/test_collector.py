"""The worker's garbage-collector schedule, in this process (restored after each test)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.worker.runtime import collector


@pytest.fixture(autouse=True)
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.enable()
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    """A container that can be part of a reference cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_objects_alive_at_start_are_frozen_and_full_passes_are_left_to_the_worker() -> None:
    started_with = _Node()
    collector.settle_after_start()

    assert gc.get_freeze_count() > 0
    assert all(tracked is not started_with for tracked in gc.get_objects())
    assert gc.get_threshold() == (
        collector.YOUNG_THRESHOLD,
        collector.MIDDLE_THRESHOLD,
        collector.NEVER,
    )


def test_a_pass_after_a_persist_frees_cyclic_garbage_once_the_interval_has_passed() -> None:
    now = [100.0]
    passes = collector.FullPasses(lambda: now[0])
    collector.settle_after_start()
    gc.disable()  # no young pass may free the cycle first
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second

    now[0] += collector.FULL_PASS_INTERVAL / 2
    assert not passes.after_persist()
    assert gone() is not None  # not due yet: the cycle is still there
    now[0] += collector.FULL_PASS_INTERVAL / 2
    assert passes.after_persist()
    assert gone() is None
    assert not passes.after_persist()  # the next one is an interval later
