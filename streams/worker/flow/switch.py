"""Touching every contact when a plan version takes over, events or not.

The core switches a contact to a new version when the contact is next scored (an event or an
`advance`), at the version's start. A contact with neither (no event, and a deadline far away
or none) would keep showing the old version's score, and its plan-change outputs would come
out whenever it is next touched. The deadlines stored with the records were computed before
the version existed, so the deadline index does not know about the switch either; records
persisted since then do (`next_deadline` with a history includes the next switch).

So once a partition's time reaches a version's start, the timer pass reads the partition's
records once, in slices (`SLICE`, the event loop runs between them), and sends a tick to each
contact still on an older version whose stored deadline is later than now (those due earlier
get their tick from the deadline index anyway). Telling which contacts are still on an older
version costs a decode of their state; a pass already made is remembered per partition until
the partition moves or the process restarts. Then the pass runs once more; when it finds no
one left to tick, it says so in the partition's database (`SWITCHED`), and later starts skip
it. A record written since the version was installed needs no pass: its deadline includes
the switch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import islice

from streams.models.plan_versions import Change
from streams.scoring import decode_state
from streams.worker.plans.live import LivePlans
from streams.worker.state.store import ContactStore, record_deadline, record_state

SWITCHED = "plan-switched"
"""Metadata key: the label of the version a pass found every contact of the partition already
on (or due anyway). Local, never in the changelog: a partition's next owner makes its own."""
SLICE = 500
"""Records read between two yields to the event loop: about 10 ms of decoding at 20 µs a
state (100,000 records: 2.9 s for the whole pass, bench/timer_cost.py `switch_pass`)."""


class SwitchPasses:
    """Which partitions still need a pass for the version in force, and the pass itself."""

    def __init__(self, plans: LivePlans) -> None:
        self._plans = plans
        self._done: dict[int, int] = {}
        """Partition -> index of the latest version whose pass went through it."""

    def target(self, store: ContactStore, partition: int, now: float) -> int | None:
        """The index of the version in force at `now` if the partition has not had its pass
        for it yet; None when there is nothing to do."""
        history = self._plans.history
        index = history.index_at(now)
        if index == 0 or self._done.get(partition, 0) >= index:
            return None
        if history.versions[index].change is Change.RESCORE:
            return None  # time takes no contact there: the partition's rebuild does
        if store.meta(partition, SWITCHED) == history.versions[index].label.encode():
            self._done[partition] = index
            return None
        return index

    def scan(
        self, records: Iterator[tuple[str, bytes]], now: float, target: int
    ) -> tuple[list[tuple[str, float]], str | None]:
        """Up to `SLICE` records: the `(contact id, stored deadline)` of those to tick, and
        the last contact id read, to go on from (None: the partition's end)."""
        history = self._plans.history
        stale: list[tuple[str, float]] = []
        last: str | None = None
        read = 0
        for contact_id, record in islice(records, SLICE):
            read += 1
            last = contact_id
            deadline = record_deadline(record)
            if deadline is not None and deadline <= now:
                continue  # due: the deadline index ticks it
            state = decode_state(record_state(record))
            if state.first_seen is None:
                continue  # nothing scored: it starts with the version in force
            index = history.index_of(state.plan_version)
            if index is None or index < target:
                stale.append((contact_id, math.inf if deadline is None else deadline))
        return stale, last if read == SLICE else None

    def finished(self, store: ContactStore, partition: int, target: int, ticked: bool) -> None:
        """The pass for `target` went through the partition; `ticked`: it found contacts to
        tick, so a restart must look again."""
        self._done[partition] = max(target, self._done.get(partition, 0))
        if not ticked:
            label = self._plans.history.versions[target].label
            store.write(partition, {}, meta={SWITCHED: label.encode()})

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved: their next owner makes its own pass."""
        for partition in partitions:
            self._done.pop(partition, None)
