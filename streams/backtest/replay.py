"""Replaying a file of events through the core: the batch driver behind `leadscore backtest`.

It is the reference the stream worker is checked against, so it does nothing clever: events in
time order (ties in line order, see `in_time_order`), one contact state per contact, `advance`
to the end time.

With a plan history, `forward` versions take over in the core, contact by contact. A `rescore`
version is the driver's: before the first event at or after its start (or at the end), every
contact is rebuilt from the events before the start, read again from the file (see `Prefix`),
under the version's plans, and the core's `rescore` reports what changed for it.
"""

from __future__ import annotations

import gc
import gzip
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import takewhile
from math import inf, nextafter
from pathlib import Path

from streams.models.errors import scoring_error
from streams.models.events import EventError, TrackingEvent, parse_structured
from streams.models.plan_versions import Change, PlanHistory
from streams.scoring import (
    ContactState,
    Outcome,
    Output,
    Plans,
    PlanSet,
    advance,
    plans_for,
    rescore,
    score_event,
)
from streams.scoring.state import copy_state

Progress = Callable[[int, int], None]
"""Called now and then with (bytes read, total bytes) of the input file."""
Cutoff = Callable[[str], float | None]
"""A contact's own end time, or None for the common one (`leadscore plans evaluate`): its events
after it are not scored and it is advanced to it (if earlier than the common end) instead, so
its state is its state as of then."""
Prefix = Callable[[float], Iterable[TrackingEvent]]
"""The events before a time, in time order: what a `rescore` version rebuilds contacts from
(a file's events are in memory anyway, in time order: a rescore reads them again there)."""


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class FailedEvent:
    """An event the core failed on (`event` None: advancing the contact to the end): what the
    worker dead-letters as `scoring-error`. The contact keeps the state it had before."""

    contact_id: str
    event: TrackingEvent | None
    message: str


@dataclass(slots=True)
class ReplayResult:
    """Final states and everything the worker would have sent."""

    states: dict[str, ContactState] = field(default_factory=dict)
    alerts: list[Output] = field(default_factory=list)
    score_updates: int = 0
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    rejected: list[RejectedLine] = field(default_factory=list)
    failed: list[FailedEvent] = field(default_factory=list)
    until: float | None = None
    updates: list[Output] | None = None
    """The score updates themselves, kept only when a driver asks (`leadscore explain`)."""


class OutOfOrderError(ValueError):
    """`replay` was given events out of time order (`replay_file` sorts such a file itself)."""


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The core makes no reference cycles, but the collector rescans every live contact state
    as the heap grows: pausing it made a 100,000-contact replay about 30% faster. What the
    replay allocated is frozen before the collector resumes: its first pass would otherwise
    scan all of it once, for nothing (0.3 s after 200,000 events, 7% of the replay)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()


def replay(
    events: Iterable[TrackingEvent],
    plans: Plans,
    until: float | None = None,
    *,
    cutoff: Cutoff | None = None,
) -> ReplayResult:
    """Apply time-ordered events, then advance every contact to `until` (default: last time).

    A sequence is replayed twice when the core fails on an event (see `_replay_guarded`); a
    one-shot iterable, which cannot be, is replayed with a copy of each state at once (and
    cannot be rebuilt from for a `rescore` version).
    """
    if isinstance(events, Sequence):
        return _replay_guarded(
            lambda: events, plans, until, prefix_of(lambda: events), cutoff=cutoff
        )
    with cyclic_gc_paused():
        return _replay(events, plans, until, safe=True, prefix=None, cutoff=cutoff)


def plans_at(plans: Plans, moment: float | None) -> PlanSet:
    """The plan set in force at `moment` (the first version's before any event): what the
    final scores of a replay are reported in."""
    if isinstance(plans, PlanSet):
        return plans
    return plans.versions[0 if moment is None else plans.index_at(moment)].plans


def prefix_of(read: Callable[[], Iterable[TrackingEvent]]) -> Prefix:
    """A `Prefix` of time-ordered events that `read` gives again each time it is called: it
    stops reading at the first event at or after the time."""
    return lambda start: takewhile(lambda event: event.time < start, read())


class CoreFailedError(Exception):
    """The core raised during a fast pass: the replay starts again in safe mode."""


def _replay_guarded(
    events: Callable[[], Iterable[TrackingEvent]],
    plans: Plans,
    until: float | None,
    prefix: Prefix | None,
    *,
    cutoff: Cutoff | None = None,
) -> ReplayResult:
    """Replay fast, with the core changing the states in place; if it fails on an event (a bug),
    that contact's state may be half changed, so replay again from the start, with each state
    copied before the core gets it (`copy_state`, 5-7 µs an event, a fifth of the core's time):
    the failing events are then reported and leave their contacts exactly as they were, as the
    worker's dead-lettering does. The copies cost nothing while the core does not fail."""
    with cyclic_gc_paused():
        try:
            return _replay(events(), plans, until, safe=False, prefix=prefix, cutoff=cutoff)
        except CoreFailedError:
            return _replay(events(), plans, until, safe=True, prefix=prefix, cutoff=cutoff)


def _replay(
    events: Iterable[TrackingEvent],
    plans: Plans,
    until: float | None,
    *,
    safe: bool,
    prefix: Prefix | None,
    cutoff: Cutoff | None = None,
) -> ReplayResult:
    run = ReplayPass(plans, safe=safe, prefix=prefix, cutoff=cutoff)
    for event in events:
        if event.time >= run.next_rescore:
            deque(run.rescores(event.time), maxlen=0)
        run.score(event)
    end = until if until is not None else run.last_time
    if end is not None:
        deque(run.rescores(end), maxlen=0)
        for contact_id in run.result.states:
            run.advance(contact_id, end)
    run.result.until = end
    return run.result


class ReplayPass:
    """One pass over the events into a `ReplayResult`, an event or a contact at a time, so that
    a driver can tell which outputs came from which step (`streams.backtest.parallel` does).

    Unsafe (`safe=False`), the core changes the states in place and a failure raises
    `CoreFailedError`; safe, each state is copied first and a failure is reported instead.
    """

    __slots__ = (
        "_cutoff",
        "_pending",
        "_prefix",
        "last_time",
        "next_rescore",
        "plans",
        "result",
        "safe",
    )

    def __init__(
        self,
        plans: Plans,
        *,
        safe: bool,
        prefix: Prefix | None = None,
        keep_updates: bool = False,
        cutoff: Cutoff | None = None,
    ) -> None:
        if cutoff is not None and isinstance(plans, PlanHistory):
            raise ValueError("per-contact cutoffs are for one plan set, not a plan history")
        self.plans = plans
        self._cutoff = cutoff
        self.safe = safe
        self.result = ReplayResult(updates=[] if keep_updates else None)
        self.last_time: float | None = None
        self._pending: deque[int] = deque()
        if isinstance(plans, PlanHistory):
            self._pending.extend(
                index
                for index, version in enumerate(plans.versions)
                if index > 0 and version.change is Change.RESCORE
            )
        if self._pending and prefix is None:
            raise ValueError("a `rescore` version needs events that can be read again")
        self._prefix = prefix
        self.next_rescore = self._next_rescore()
        """When the next `rescore` version takes over (inf: none): call `rescores` first
        for an event at or after it, and before advancing to an end after it."""

    def _next_rescore(self) -> float:
        if not self._pending or not isinstance(self.plans, PlanHistory):
            return inf
        return self.plans.start(self._pending[0])

    def rescores(self, time: float) -> Iterator[tuple[float, str]]:
        """Rescore every contact for each `rescore` version that takes over by `time`,
        yielding (the version's start, contact id) once each contact's outputs are in."""
        while self.next_rescore <= time:
            index = self._pending.popleft()
            yield from self._rescore(index)
            self.next_rescore = self._next_rescore()

    def _rescore(self, index: int) -> Iterator[tuple[float, str]]:
        """Each contact advanced to just before the version's start under the history, then
        rebuilt under the version's plans from the events before it (their failures reported
        with the contact), then passed through the core's `rescore`."""
        history = self.plans
        assert isinstance(history, PlanHistory) and self._prefix is not None
        version, start = history.versions[index], history.start(index)
        rebuild = ReplayPass(version.plans, safe=self.safe)
        for event in self._prefix(start):
            rebuild.score(event)
        rebuild_failed: defaultdict[str, list[FailedEvent]] = defaultdict(list)
        for failed in rebuild.result.failed:
            rebuild_failed[failed.contact_id].append(failed)
        result = self.result
        before = nextafter(start, -inf)
        for contact_id, state in list(result.states.items()):
            rebuilt = rebuild.result.states.get(contact_id) or ContactState(contact_id)
            try:
                old, outputs = advance(copy_state(state) if self.safe else state, before, history)
                new, changes = rescore(old, plans_for(old, history), rebuilt, version, start)
            except Exception as error:
                if not self.safe:
                    raise CoreFailedError from error
                result.failed.append(FailedEvent(contact_id, None, str(scoring_error(error))))
            else:
                result.failed.extend(rebuild_failed.get(contact_id, ()))
                result.states[contact_id] = new
                _collect(result, outputs)
                _collect(result, changes)
            yield start, contact_id

    def score(self, event: TrackingEvent) -> None:
        """Apply the next event; raises `OutOfOrderError` if it is older than the last one."""
        if self.last_time is not None and event.time < self.last_time:
            raise OutOfOrderError(f"event {event.id!r} is older than the one before it")
        self.last_time = event.time
        if self._cutoff is not None:
            own = self._cutoff(event.subject)
            if own is not None and event.time > own:
                return
        result = self.result
        stored = result.states.get(event.subject)
        state = copy_state(stored) if self.safe and stored is not None else stored
        try:
            step = score_event(state, event, self.plans)
        except Exception as error:
            if not self.safe:
                raise CoreFailedError from error
            result.failed.append(FailedEvent(event.subject, event, str(scoring_error(error))))
            return
        if step.state is not stored:  # mostly the same object, changed: one lookup saved
            result.states[event.subject] = step.state
        result.outcomes[step.outcome] += 1
        _collect(result, step.outputs)

    def advance(self, contact_id: str, end: float) -> None:
        """Advance one contact (already scored) to the end time, or to its own cutoff."""
        if self._cutoff is not None:
            own = self._cutoff(contact_id)
            end = end if own is None else min(own, end)
        result = self.result
        state = result.states[contact_id]
        try:
            advanced, outputs = advance(copy_state(state) if self.safe else state, end, self.plans)
        except Exception as error:
            if not self.safe:
                raise CoreFailedError from error
            result.failed.append(FailedEvent(contact_id, None, str(scoring_error(error))))
            return
        result.states[contact_id] = advanced
        _collect(result, outputs)


def replay_file(
    path: Path,
    plans: Plans,
    until: float | None = None,
    progress: Progress | None = None,
    *,
    cutoff: Cutoff | None = None,
) -> ReplayResult:
    """Replay a JSONL(.gz) file: read whole, put in time order (`in_time_order`), replayed once."""
    rejected: list[RejectedLine] = []
    with cyclic_gc_paused():  # every event is alive until the replay ends: nothing to collect
        lines = valid_events(read_lines(path, progress), rejected)
        result = replay([event for _, event in in_time_order(lines)], plans, until, cutoff=cutoff)
    result.rejected = rejected
    return result


def in_time_order(
    events: Iterable[tuple[int, TrackingEvent]],
) -> list[tuple[int, TrackingEvent]]:
    """(line, event) pairs, given in line order, in the order every replay uses: by event time,
    equal times in line order. `backtest`, its `--jobs` workers and `explain` all order here.

    The events are read whole first: a replay as the file is read would have to be undone, since
    its last line may be earlier than every event before it (an export appended to a log, two
    files concatenated). `list.sort` (Timsort, stable) then finds the runs already in order as
    it scans and merges the rest into them, so a sorted file costs a comparison an event, a
    file with a few late lines not much more (they are sorted and merged in, galloping over
    the run), and a shuffled one a full sort. The price is memory: every event of the file at
    once (about 600 bytes each), where a replay as read would hold only the states.
    """
    ordered = list(events)
    ordered.sort(key=_time_of)
    return ordered


def _time_of(item: tuple[int, TrackingEvent]) -> float:
    return item[1].time


def read_lines(path: Path, progress: Progress | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its line break) for each non-blank line of a JSONL(.gz)."""
    total = path.stat().st_size
    with path.open("rb") as raw:
        stream: Iterable[bytes] = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
        for number, line in enumerate(stream, start=1):
            if progress is not None and number % 65536 == 0:
                progress(raw.tell(), total)
            # The line break is not the event's: the size limit is the worker's.
            if not line.isspace():
                yield number, line.removesuffix(b"\n").removesuffix(b"\r")
    if progress is not None:
        progress(total, total)


def valid_events(
    lines: Iterable[tuple[int, bytes]], rejected: list[RejectedLine]
) -> Iterator[tuple[int, TrackingEvent]]:
    """The lines' valid events with their line numbers; the invalid lines go to `rejected`.
    Parsing and sorting out in one generator: each generator a line passes through cost 1-2%
    of a compiled replay."""
    for number, line in lines:
        try:
            event = parse_structured(line)
        except EventError as error:
            rejected.append(RejectedLine(number, error.reason, str(error)))
        else:
            yield number, event


def _collect(result: ReplayResult, outputs: list[Output]) -> None:
    for output in outputs:
        if output.kind == "alert":
            result.alerts.append(output)
        else:
            result.score_updates += 1
            if result.updates is not None:
                result.updates.append(output)
