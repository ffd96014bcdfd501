"""When the worker's garbage collector runs: full passes at commits, not at random moments.

CPython's cyclic collector rescans every container object it tracks in a full pass. In the
worker those are Faust's long-lived objects and the states written since the last commit
(about 25 containers each; 10,000 states between two commits at 4,000 events/s). Automatic
full passes therefore stalled the event loop for 50-170 ms at random moments (300-450 ms while
persisted states were also kept decoded), and under load took about a tenth of the CPU, while
finding almost nothing to free: scoring state holds no reference cycles. So
(bench/README.md has the measurements):

1. once the app has started, what exists is frozen: it lives for the whole run, and a full
   pass never scans it again;
2. young objects are collected every 50,000 allocations rather than 700, so most die by
   reference counting before a pass looks at them;
3. no automatic full pass: one runs after a persist, when the states of the last interval
   have just been released and there is least to scan (1-2 ms at 1,000 events/s, up to about
   60 ms at full load), but at most every `FULL_PASS_INTERVAL`: persists come every 0.1 s,
   and a pass after each was 9% of the event loop under load. Cyclic garbage therefore lives
   at most a few seconds.

In all, the collector's share of the CPU under load went from about 12% to 4%, and no pause
of it exceeds 100 ms any more.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

YOUNG_THRESHOLD = 50_000
"""Allocations (minus deallocations) of container objects between two young passes."""
MIDDLE_THRESHOLD = 10
"""Young passes between two passes of the middle generation (CPython's default)."""
NEVER = 2**30
"""A full-pass threshold that is never reached."""
FULL_PASS_INTERVAL = 5.0
"""Seconds at least between two full passes after persists."""


def settle_after_start() -> None:
    """Freeze what exists once the app has started, and take over the full passes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, NEVER)


class FullPasses:
    """The full pass, at the moment the states written since the last commit were released,
    when `FULL_PASS_INTERVAL` has passed since the last one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def after_persist(self) -> bool:
        """Run the full pass if it is due; whether it ran."""
        now = self._clock()
        if now - self._last < FULL_PASS_INTERVAL:
            return False
        gc.collect()
        self._last = now
        return True


def freeze_survivors() -> None:
    """Collect, then freeze what survives: called by a partition rebuild between two batches,
    whose states live until the swap and would otherwise be rescanned by every full pass
    after a persist (`streams.worker.rescore.rebuild`). Frozen objects are still freed when their
    last reference goes; only a cycle frozen alive would stay, and the collect before the
    freeze has just freed every unreachable one. The pass scans only what was allocated since
    the last freeze."""
    gc.collect()
    gc.freeze()
