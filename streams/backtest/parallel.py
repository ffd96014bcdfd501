"""`leadscore backtest --jobs N`: the replay spread over N processes, with the same result.

Contacts are independent, so each worker process replays the contacts one hash of the contact
id gives it. The parent reads the file once and sends each line, undecoded, to its worker
(`route` finds the contact id without decoding the JSON); decoding and scoring, nearly all of
the cost, happen in the workers. (The other way, each worker reading the whole file and keeping
its share, cost 5% more CPU in all on 200,000 events, as each one reads, decompresses and scans
every line.) Each worker holds its share in memory, in time order, as `replay_file` holds a
file: a replay again after a failure of the core reads it there.

The result is exactly the single-process one: every output and failure carries the position
of what caused it, (time, line) of its event or of its contact's first event, which is the
single-process order, and the parent merges by it. The end time (the last event's, without
`--until`) is the latest of the workers' own, exchanged before anyone advances.

A `rescore` version rebuilds each contact from its events before the version's start, which
are all in its own worker: each worker rebuilds its own contacts, from its share of the file,
and what a contact's rescore sends is placed at the start, in the order of first events.
"""

from __future__ import annotations

import gc
import heapq
import multiprocessing
import os
import queue
import re
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

import orjson

from streams.backtest.replay import (
    CoreFailedError,
    Cutoff,
    FailedEvent,
    Progress,
    RejectedLine,
    ReplayPass,
    ReplayResult,
    cyclic_gc_paused,
    in_time_order,
    plans_at,
    prefix_of,
    read_lines,
    replay_file,
    valid_events,
)
from streams.models.events import TrackingEvent
from streams.models.outputs import Output
from streams.scoring import ContactState, Outcome, Plans, PlanSet, current_score

BATCH_LINES = 2048
"""Lines sent to a worker at once: big enough that pickling and the pipe cost little per line."""
QUEUED_BATCHES = 4
"""Batches waiting for each worker: the parent reads ahead, but not the whole file."""
_POLL_SECONDS = 1.0
"""How often a wait on a worker checks that the workers are still alive."""

Key = tuple[float, ...]
"""Where an output stands in the single-process order: (0, time, line) of the event that made
it, (0, start, 0, time, line) with its contact's first scored event for what a `rescore`
version taking over at `start` made, or (1, time, line) of its contact's first scored event
for what advancing the contact to the end made."""
ScoreRow = tuple[str, tuple[int, ...]]
"""A live contact's final score in each plan, in plan order."""
_T = TypeVar("_T")


@dataclass(slots=True)
class Backtest:
    """What the report, the scores file and the alerts file are made from; the same whatever
    the number of jobs. `scores` has a row per live contact, sorted by contact id."""

    alerts: list[Output] = field(default_factory=list)
    score_updates: int = 0
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    rejected: list[RejectedLine] = field(default_factory=list)
    failed: list[FailedEvent] = field(default_factory=list)
    scores: list[ScoreRow] = field(default_factory=list)
    until: float | None = None


def default_jobs() -> int:
    """The cores this process may use (Python 3.13's `os.process_cpu_count`)."""
    counter: Callable[[], int | None] | None = getattr(os, "process_cpu_count", None)
    if counter is not None:
        return counter() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def backtest_file(
    path: Path,
    plans: Plans,
    until: float | None = None,
    progress: Progress | None = None,
    jobs: int = 1,
    *,
    cutoff: Cutoff | None = None,
) -> Backtest:
    """`replay_file` with `jobs` worker processes (in this process for one job)."""
    if jobs <= 1:
        # The rows too: the first collection after the replay would scan every state (0.6 s
        # for 20,000 contacts), and their 20,000 tuples would start one.
        with cyclic_gc_paused():
            result = replay_file(path, plans, until, progress, cutoff=cutoff)
            rows = score_rows(result.states, plans_at(plans, result.until))
        return Backtest(
            alerts=result.alerts,
            score_updates=result.score_updates,
            outcomes=result.outcomes,
            rejected=result.rejected,
            failed=result.failed,
            scores=rows,
            until=result.until,
        )
    return _Pool(path, plans, until, jobs, cutoff).run(progress)


def score_rows(states: dict[str, ContactState], plans: PlanSet) -> list[ScoreRow]:
    """The final scores of the live contacts (erased ones have none), sorted by contact id."""
    return [
        (contact_id, tuple(current_score(plan, state) for plan in plans))
        for contact_id, state in sorted(states.items())
        if state.first_seen is not None
    ]


_SUBJECT = re.compile(rb'"subject"[ \t\n\r]*:[ \t\n\r]*"([^"]*)"')


def route(line: bytes, jobs: int) -> int:
    """The worker of the line's contact (by CRC-32 of the contact id), reading no more JSON
    than it must.

    Without a backslash no key can be escaped, so a line with one `"subject"` holds the
    event's subject there if it is a valid event at all; any other line is decoded. A line
    that is no valid event may go to any worker: it is only a rejected line there.
    """
    if b"\\" not in line and line.count(b'"subject"') == 1:
        match = _SUBJECT.search(line)
        if match is not None:
            return zlib.crc32(match[1]) % jobs
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return 0
    subject = obj.get("subject") if isinstance(obj, dict) else None
    if not isinstance(subject, str):
        return 0
    return zlib.crc32(subject.encode("utf-8", errors="surrogatepass")) % jobs


@dataclass(slots=True)
class _Share:
    """One worker's part of the `Backtest`, each output and failure with its `Key`."""

    alerts: list[tuple[Key, Output]]
    failed: list[tuple[Key, FailedEvent]]
    rejected: list[RejectedLine]
    score_updates: int
    outcomes: Counter[Outcome]
    scores: list[ScoreRow]


class _WorkerFailedError(RuntimeError):
    pass


class _Pool:
    """The parent's side: start the workers, deal the lines, exchange the end time, merge."""

    def __init__(
        self, path: Path, plans: Plans, until: float | None, jobs: int, cutoff: Cutoff | None
    ) -> None:
        # fork: the workers inherit the plans and the loaded code, and start in milliseconds
        methods = multiprocessing.get_all_start_methods()
        context: BaseContext = multiprocessing.get_context("fork" if "fork" in methods else None)
        self._path = path
        self._until = until
        self._inboxes: list[Any] = [context.Queue(QUEUED_BATCHES) for _ in range(jobs)]
        self._outbox: Any = context.Queue()
        self._workers: list[BaseProcess] = [
            context.Process(  # type: ignore[attr-defined]
                target=_work,
                args=(index, plans, self._inboxes[index], self._outbox, cutoff),
                name=f"leadscore-backtest-{index}",
                daemon=True,
            )
            for index in range(jobs)
        ]

    def run(self, progress: Progress | None) -> Backtest:
        for worker in self._workers:
            worker.start()
        done = False
        try:
            self._deal(progress)
            ends = self._gather()
            end = (
                self._until
                if self._until is not None
                else max((t for t in ends if t is not None), default=None)
            )
            for inbox in self._inboxes:
                self._put(inbox, end)
            shares: list[_Share] = self._gather()
            for worker in self._workers:
                worker.join()
            done = True
        finally:
            for inbox in self._inboxes:
                if not done:  # what a dead worker did not read must not hold up our exit
                    inbox.cancel_join_thread()
                inbox.close()
            for worker in self._workers:
                if worker.is_alive():
                    worker.terminate()
                    worker.join()
        return _merge(shares, end)

    def _deal(self, progress: Progress | None) -> None:
        jobs = len(self._workers)
        numbers: list[list[int]] = [[] for _ in range(jobs)]
        lines: list[list[bytes]] = [[] for _ in range(jobs)]
        for number, line in read_lines(self._path, progress):
            index = route(line, jobs)
            numbers[index].append(number)
            lines[index].append(line)
            if len(numbers[index]) == BATCH_LINES:
                self._put(self._inboxes[index], (numbers[index], b"\n".join(lines[index])))
                numbers[index], lines[index] = [], []
        for index, inbox in enumerate(self._inboxes):
            if numbers[index]:
                self._put(inbox, (numbers[index], b"\n".join(lines[index])))
            self._put(inbox, None)

    def _put(self, inbox: Any, item: object) -> None:
        while True:
            try:
                inbox.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                self._check_alive()

    def _gather(self) -> list[Any]:
        """One message from each worker, in worker order; a worker's failure is raised here."""
        messages: dict[int, Any] = {}
        while len(messages) < len(self._workers):
            try:
                index, ok, message = self._outbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                self._check_alive()
                continue
            if not ok:
                raise _WorkerFailedError(f"backtest worker {index} failed:\n{message}")
            messages[index] = message
        return [messages[index] for index in range(len(self._workers))]

    def _check_alive(self) -> None:
        for worker in self._workers:
            if worker.exitcode is not None and worker.exitcode != 0:
                raise _WorkerFailedError(f"{worker.name} exited with code {worker.exitcode}")


def _merge(shares: Sequence[_Share], until: float | None) -> Backtest:
    def merged(lists: Iterable[list[tuple[Key, _T]]]) -> list[_T]:
        return [item for _, item in heapq.merge(*lists, key=lambda keyed: keyed[0])]

    outcomes: Counter[Outcome] = Counter()
    for share in shares:
        outcomes.update(share.outcomes)
    return Backtest(
        alerts=merged(share.alerts for share in shares),
        score_updates=sum(share.score_updates for share in shares),
        outcomes=outcomes,
        rejected=list(heapq.merge(*(s.rejected for s in shares), key=lambda r: r.line)),
        failed=merged(share.failed for share in shares),
        scores=list(heapq.merge(*(share.scores for share in shares), key=lambda row: row[0])),
        until=until,
    )


def _work(index: int, plans: Plans, inbox: Any, outbox: Any, cutoff: Cutoff | None) -> None:
    """A worker process: its share of the lines from the parent, then its `_Share` back."""
    gc.disable()  # as `replay` does, for the whole process: the core makes no cycles
    try:
        share = _Worker(index, plans, inbox, outbox, cutoff).run()
    except Exception:
        outbox.put((index, False, traceback.format_exc()))
        raise
    outbox.put((index, True, share))


class _Worker:
    """Replays one share as `replay_file` replays a file: read whole, in time order
    (`in_time_order`), fast first, again with copies from the same events if the core fails."""

    def __init__(
        self, index: int, plans: Plans, inbox: Any, outbox: Any, cutoff: Cutoff | None = None
    ) -> None:
        self._index = index
        self._cutoff = cutoff
        self._plans = plans
        self._inbox = inbox
        self._outbox = outbox
        self._end_known = False
        self._end: float | None = None

    def run(self) -> _Share:
        rejected: list[RejectedLine] = []
        events = in_time_order(valid_events(self._from_parent(), rejected))
        try:
            return self._pass(events, rejected, safe=False)
        except CoreFailedError:
            return self._pass(events, rejected, safe=True)

    def _pass(
        self, events: list[tuple[int, TrackingEvent]], rejected: list[RejectedLine], *, safe: bool
    ) -> _Share:
        prefix = prefix_of(lambda: (event for _, event in events))
        run = ReplayPass(self._plans, safe=safe, prefix=prefix, cutoff=self._cutoff)
        result = run.result
        alert_keys: list[Key] = []
        failed_keys: list[Key] = []
        first: dict[str, Key] = {}

        def rescore(time: float) -> None:
            alerts, failed = len(result.alerts), len(result.failed)
            for start, contact_id in run.rescores(time):
                key = (0, start, 0, *first[contact_id][1:])
                alert_keys.extend([key] * (len(result.alerts) - alerts))
                failed_keys.extend([key] * (len(result.failed) - failed))
                alerts, failed = len(result.alerts), len(result.failed)

        for number, event in events:
            if event.time >= run.next_rescore:
                rescore(event.time)
            key = (0, event.time, number)
            alerts, failed, contacts = len(result.alerts), len(result.failed), len(result.states)
            run.score(event)
            alert_keys += [key] * (len(result.alerts) - alerts)
            failed_keys += [key] * (len(result.failed) - failed)
            if len(result.states) > contacts:
                first[event.subject] = (1, event.time, number)
        end = self._end_time(run.last_time)
        if end is not None:
            rescore(end)
            for contact_id in result.states:
                alerts, failed = len(result.alerts), len(result.failed)
                run.advance(contact_id, end)
                alert_keys += [first[contact_id]] * (len(result.alerts) - alerts)
                failed_keys += [first[contact_id]] * (len(result.failed) - failed)
        return _share(result, rejected, alert_keys, failed_keys, plans_at(self._plans, end))

    def _end_time(self, last_time: float | None) -> float | None:
        """The end time all workers advance to: sent once by the parent, after every worker
        has told it its last event's time."""
        if not self._end_known:
            self._outbox.put((self._index, True, last_time))
            self._end, self._end_known = self._inbox.get(), True
        return self._end

    def _from_parent(self) -> Iterator[tuple[int, bytes]]:
        while (batch := self._inbox.get()) is not None:
            numbers, blob = batch
            yield from zip(numbers, blob.split(b"\n"), strict=True)


def _share(
    result: ReplayResult,
    rejected: list[RejectedLine],
    alert_keys: list[Key],
    failed_keys: list[Key],
    plans: PlanSet,
) -> _Share:
    return _Share(
        alerts=list(zip(alert_keys, result.alerts, strict=True)),
        failed=list(zip(failed_keys, result.failed, strict=True)),
        rejected=rejected,
        score_updates=result.score_updates,
        outcomes=result.outcomes,
        scores=score_rows(result.states, plans),
    )
