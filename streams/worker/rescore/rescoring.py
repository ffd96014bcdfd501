"""`change: rescore` in a running worker: each owned partition rebuilt from the log, then
swapped in between two of its messages.

The core never takes a contact into a rescore version by time (`streams.scoring.engine`), so
until its partition is swapped a contact keeps being scored, and shown, with the version before.
A partition is rebuilt once its time reaches the version's start (`Timers.now`): in the
background, one partition after another (`streams.worker.rescore.rebuild`), from the start of the
retained input and re-routed topics up to what the processor had processed. When the rebuild is
done, a tick wakes the partition; before its next message the processor holds it while the
rebuild catches up with what was processed meanwhile and the swap sends each contact's changes
(`Rebuilt.swap`). The label of the version is then noted in the partition's metadata, made
durable with the swapped states (locally and in the changelog), so a restart or the partition's
next owner does not rebuild it again; one that finds no note rebuilds, which changes nothing
where the swap was already made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from math import inf

from streams.kafka.admin import committed_offsets
from streams.models.plan_versions import Change, PlanHistory, PlanVersion
from streams.worker.flow.outbox import Outbox
from streams.worker.flow.timers import Timers
from streams.worker.plans.live import LivePlans
from streams.worker.rescore.rebuild import HistorySource, Rebuilt, rebuild_partition
from streams.worker.settings import WorkerSettings
from streams.worker.state.states import ContactStates
from streams.worker.web.metrics import Metrics

logger = logging.getLogger(__name__)

RESCORED = "rescored"
"""Partition metadata: the label of the latest rescore version the partition was swapped to."""


class Rescores:
    """The `Rescorer` of a worker (`LivePlans.rescorer`), and the processor's hook before each
    message (`before`)."""

    def __init__(
        self,
        settings: WorkerSettings,
        live: LivePlans,
        states: ContactStates,
        outbox: Outbox,
        processed: dict[tuple[str, int], int],
        timers: Timers,
        metrics: Metrics,
        active: Callable[[], Iterable[int]],
    ) -> None:
        self._settings = settings
        self._source = HistorySource.of(settings)
        self._live = live
        self._states = states
        self._outbox = outbox
        self._processed = processed
        self._timers = timers
        self._metrics = metrics
        self._active = active
        self.target = latest_rescore(live.history)
        """The latest rescore version (None: nothing to rebuild, ever, until one comes)."""
        self._checked: set[int] = set()
        """Partitions found swapped to `target`, or with a rebuild under way."""
        self._tasks: dict[int, asyncio.Task[Rebuilt]] = {}
        self._one_at_a_time = asyncio.Lock()
        """A replay holds the GIL and a partition's states in memory: one partition at once."""

    def rescore(self, history: PlanHistory, version: PlanVersion) -> None:
        """A rescore version was installed: every owned partition is rebuilt once its time
        reaches the version's start (checked now, and again before each of its messages)."""
        self.target = version
        for task in self._tasks.values():
            task.cancel()  # built for an older version
        self._tasks.clear()
        self._checked.clear()
        for partition in self._active():
            self._check(partition)

    async def before(self, partition: int) -> None:
        """Called before each message: start a due rebuild, or swap a finished one in."""
        if self.target is None:
            return
        if partition not in self._checked:
            self._check(partition)
        task = self._tasks.get(partition)
        if task is not None and task.done():
            del self._tasks[partition]
            await self._swap(partition, task)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved: their rebuilds stop; their next owner checks them itself."""
        for partition in partitions:
            task = self._tasks.pop(partition, None)
            if task is not None:
                task.cancel()
            self._checked.discard(partition)

    def _check(self, partition: int) -> None:
        version = self.target
        assert version is not None
        if self._states.meta(partition, RESCORED) == version.label.encode():
            self._checked.add(partition)
            return
        now = self._timers.now(partition)
        start = -inf if version.effective_from is None else version.effective_from
        if now is None or now < start:
            return  # not yet: looked at again before the partition's next message
        self._checked.add(partition)
        self._tasks[partition] = asyncio.create_task(self._rebuild(partition, version))

    async def _rebuild(self, partition: int, version: PlanVersion) -> Rebuilt:
        async with self._one_at_a_time:
            logger.info("rebuilding partition %s for %s", partition, version.describe())
            rebuilt = await rebuild_partition(
                self._source, partition, self._ends(partition), version, self._metrics
            )
        await self._timers.wake(partition)  # its next message swaps it in, even with no event
        return rebuilt

    async def _swap(self, partition: int, task: asyncio.Task[Rebuilt]) -> None:
        try:
            rebuilt = task.result()
        except asyncio.CancelledError:
            self._checked.discard(partition)
            return
        except Exception:
            logger.exception("rebuilding partition %s failed; tried again later", partition)
            self._checked.discard(partition)
            return
        await rebuilt.catch_up(self._ends(partition))
        now = self._timers.now(partition)
        start = rebuilt.version.effective_from
        at = now if now is not None else start if start is not None else time.time()
        await rebuilt.swap(
            self._states,
            self._outbox,
            self._live.history,
            at,
            self._settings.history_size,
        )
        self._states.note(partition, RESCORED, rebuilt.version.label.encode())

    def _ends(self, partition: int) -> dict[str, int]:
        """Per topic, the offset after the last message processed; for a topic nothing was
        processed from since the start, the group's committed offset (the states hold
        everything before it)."""
        ends: dict[str, int] = {}
        for topic in self._source.topics:
            processed = self._processed.get((topic, partition))
            if processed is None:
                committed = committed_offsets(
                    self._settings.kafka, self._settings.faust_id, topic, [partition]
                )
                ends[topic] = max(committed.get(partition, 0), 0)
            else:
                ends[topic] = processed + 1
        return ends


def latest_rescore(history: PlanHistory) -> PlanVersion | None:
    """The latest `change: rescore` version after the first (the first is in force from the
    beginning: there is nothing to rescore)."""
    for version in reversed(history.versions[1:]):
        if version.change is Change.RESCORE:
            return version
    return None
