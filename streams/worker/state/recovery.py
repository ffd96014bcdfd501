"""Changelog recovery: Faust's, preceded by a fast catch-up of the contact table.

Faust's recovery service decides what to read (from the offset stored with the local
records to the changelog's end), reads it through its consumer, and tells readiness when it
is done. Its per-message route is slow (`ContactStore.catch_up` says how slow), so just before
it computes where to start for the active partitions, the contact table reads the bulk itself
with librdkafka; Faust then starts from the new local offset and reads only the rest.

Why here and not when the partitions are assigned: aiokafka sends no heartbeat while an
assignment callback runs, so a catch-up of half a minute there gets the worker thrown out of
its group (seen in the benchmark). Faust's recovery runs after the callback, in its own task.

The catch-up reads to the end, however long that takes (up to `CATCH_UP_LIMIT`): what it leaves
Faust's recovery reads, and that never finishes. The changelog is written in transactions, so
it ends with a commit marker that no consumer receives, and Faust looks past markers only under
its own exactly-once guarantee (`Recovery.detect_aborted_tx`), which the worker does not use.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, cast

from confluent_kafka import KafkaException
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, ConsumerT
from mode.utils.queues import ThrowableQueue

from streams.worker.state.store import ContactTable

if TYPE_CHECKING:
    from streams.worker.runtime.faust_app import WorkerApp

logger = logging.getLogger(__name__)

CATCH_UP_LIMIT = 600.0
"""Seconds the catch-up may read: tens of millions of contacts (a million took about 30 s in
bench/README.md). A rebalance stops it at once."""


class CatchUpRecovery(Recovery):
    """Faust's recovery, with `ContactStore.catch_up` before the active offsets are read, and
    the active partitions claimed (`streams.worker.runtime.fencing`) before anything is read."""

    _catching_up_next = False
    """Set by the active highwaters step: the step Faust waits for next reads the actives'
    offsets, and with them runs the catch-up."""

    async def _wait(self, coro: Any, timeout: Any = None) -> None:
        """Faust bounds each recovery step by `broker_request_timeout` (90 s) and goes on to the
        next one when it runs out; the step of the catch-up is bounded by `CATCH_UP_LIMIT`
        instead (tests/worker/runtime/test_faust_internals.py checks Faust's order of the steps)."""
        if self._catching_up_next:
            self._catching_up_next = False
            timeout = None
        await super()._wait(coro, timeout)

    async def _build_highwaters(
        self, consumer: ConsumerT, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        if title == "active":
            # Wait for the earlier owners' open transactions first, so that no record of theirs
            # becomes visible after this read.
            claim = cast("WorkerApp", self.app).claim_partitions
            await claim(
                {tp.partition for tp in tps if isinstance(self.tp_to_table[tp], ContactTable)}
            )
        await super()._build_highwaters(consumer, tps, destination, title)
        self._catching_up_next = title == "active"

    async def _build_offsets(
        self, consumer: ConsumerT, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        if title == "active":
            await self._catch_up(tps, destination)
            # The catch-up may have read past the highwaters found before it: a transaction
            # of an earlier owner that the broker aborted meanwhile ends with a marker.
            await super()._build_highwaters(consumer, tps, self.active_highwaters, title)
        await super()._build_offsets(consumer, tps, destination, title)

    async def _catch_up(self, tps: set[TP], destination: Counter[TP]) -> None:
        for table in {self.tp_to_table[tp] for tp in tps}:
            if not isinstance(table, ContactTable):
                continue
            mine = sorted(tp for tp in tps if self.tp_to_table[tp] is table)
            topic = table.changelog_topic.get_topic_name()
            cancelled = threading.Event()

            def stop(cancelled: threading.Event = cancelled) -> bool:
                return cancelled.is_set() or self.signal_recovery_start.is_set()

            try:
                await asyncio.to_thread(
                    table.store.catch_up,
                    topic,
                    [tp.partition for tp in mine],
                    stop,
                    time.monotonic() + CATCH_UP_LIMIT,
                )
            except asyncio.CancelledError:
                cancelled.set()
                raise
            except KafkaException as error:  # Faust's recovery reads what is left, slower
                logger.warning("changelog catch-up stopped early: %s", error)
            for tp in mine:
                offset = table.persisted_offset(tp)
                if offset is not None:
                    destination[tp] = offset


class ChangelogQueue(ThrowableQueue[Any]):
    """Faust's changelog queue, emptied when a rebalance suspends the flow but not each time
    the flow is resumed.

    Why: the fetch loop records a changelog message as read once it is in this queue, and the
    recovery service records it as applied only when it takes it out. Faust empties the queue
    on every `flow_control.resume()`, also the one at the end of each recovery, after the
    standby partitions were already resumed: the standby messages waiting in the queue then
    were dropped, and nothing read them again, because the fetch position had moved on. The
    standby applied the messages after them, so its offset passed records it never wrote, and
    a worker taking the partition over from it found those contacts missing (issue 13).
    Emptying it when the flow is suspended is safe: before it resumes, recovery seeks every
    changelog partition back to the offset it applied last.
    """

    def clear(self) -> None:
        if self._flow_control.is_active():  # a resume: what is queued is in order, keep it
            return
        super().clear()


class CatchUpTableManager(TableManager):
    """Faust's table manager, with `CatchUpRecovery` as its recovery service and a
    `ChangelogQueue`."""

    @property
    def changelog_queue(self) -> ThrowableQueue[Any]:
        if self._changelog_queue is None:
            self._changelog_queue = ChangelogQueue(
                maxsize=self.app.conf.stream_buffer_maxsize,
                flow_control=self.app.flow_control,
                clear_on_resume=True,
            )
        return self._changelog_queue

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = CatchUpRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
