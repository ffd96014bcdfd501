"""Faust's app and aiokafka consumer, subclassed for the worker's direct path.

The worker's input messages skip Faust's agents and streams: the consumer hands them to the
app's `handle` as it fetches them, and commits through the app's `commit_offsets` (one
transaction with the states, `streams.worker.runtime.fencing`). The subclasses also carry the
fixes recovery exactness depends on; tests/worker/runtime/test_faust_internals.py pins the Faust
and aiokafka internals they override.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, TransportT
from faust.types.tuples import Message
from mode import Service, ServiceT

from streams.kafka.security import KafkaConnection
from streams.worker.runtime.commit_pace import commit_due
from streams.worker.runtime.fencing import read_committed
from streams.worker.runtime.seeking import SeekGate

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch that finds no data (Faust's default: 1,500)."""
YIELD_EVERY = 100
"""Messages handled in a row before the fetch loop lets other tasks run, as in Faust."""


class _WorkerConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer with a direct path for the worker's input topics, and two
    changes that recovery exactness depends on."""

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop, except that a message of the worker's input topics goes
        straight to the app's `handle` instead of through the conductor, a stream and an agent.

        Why: Faust's route costs about 200 µs of event-loop work per message on this machine
        (four tasks and an `asyncio.wait` in `wait_first`, a lock, an `Event`, a queue hop,
        sensors), more than scoring itself; see bench/README.md for the profiles before and
        after. What the route gave is kept: a message is tracked as unacknowledged while it is
        handled and acknowledged after, so commits cover only finished messages and a
        rebalance (`wait_empty`) waits for the one in hand; `getmany` still stops yielding
        when the flow is suspended or the generation changes. Other topics (changelogs, read
        during recovery and for standbys) take Faust's own route, through `_deliver`. Seeks
        to the committed offsets run here, between two batches (`SeekGate` says why).
        """
        app = cast(WorkerApp, self.app)
        direct_topics, handle, turn = app.direct_topics, app.handle, app.turn
        # Faust's stall check (`verify_event_path`) reads when a stream last took a message
        # from each partition; no stream does here, so without this it logged "Stream has not
        # started processing" errors for every busy partition five minutes after the start.
        inbound_times, monotonic = app.monitor.stream_inbound_time, time.monotonic
        callback = self.callback
        commit_every = self._commit_every
        unacked = self._unacked_messages
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        seeks = self._seeks
        seeks.attach()
        since_yield = 0
        try:
            while not (should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                await seeks.serve()
                await self.sleep(0)
                if self.should_stop:
                    break
                async for tp, message in self.getmany(timeout=1.0):
                    since_yield += 1
                    if since_yield > YIELD_EVERY:  # let timers, HTTP and commits run
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    read = get_read_offset(tp)
                    if read is not None and offset < read:
                        continue  # fetched before a seek back; it comes again
                    if seeks.pending and message.topic in direct_topics:
                        continue  # fetched before the seek asked for; it comes again after it
                    if read and offset - read > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, read + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if message.topic in direct_topics:
                        inbound_times[tp] = monotonic()
                        async with turn:  # a commit never splits a message (`_commit_tps`)
                            unacked.add(message)
                            await handle(message)
                            if not self.ack(message):  # below the committed offset: done too
                                unacked.discard(message)
                    else:
                        await self._deliver(callback(message))
                    set_read_offset(tp, offset)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            seeks.detach()
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Fetch for the partitions active now, not for those active when the fetch returns.

        Faust hands aiokafka its live set of active partitions, and aiokafka reads an empty
        set as "every partition". When recovery paused the last active partition while a
        fetch waited (the active changelogs when they are caught up, just before the standby
        partitions are sought and resumed), aiokafka returned the records of every paused
        partition, which Faust then dropped: the fetch position had passed them, so a standby
        started past its backlog and never wrote it (issue 13: a standby that started 238
        records behind applied nothing before its highwater). A copy keeps the request as
        made; records of a partition paused meanwhile are still dropped, but recovery seeks
        every partition before it resumes it.
        """
        wanted = None if active_partitions is None else set(active_partitions)
        return await super()._getmany(wanted, timeout)

    @functools.cached_property
    def _seeks(self) -> SeekGate:
        return SeekGate(self._seek_to_committed_now)

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets, run by the fetch loop (`SeekGate` says why)."""
        await self._seeks.request()

    async def _seek_to_committed_now(self) -> None:
        """Seek, then forget what was acknowledged of the input partitions: every message from
        the committed offset on comes again, and is acknowledged again once handled."""
        await super().perform_seek()
        direct_topics = cast(WorkerApp, self.app).direct_topics
        for tp in self.assignment():
            if tp.topic in direct_topics:
                self._acked.pop(tp, None)
                self._acked_index.pop(tp, None)
                self._gap.pop(tp, None)
        for message in [m for m in self._unacked_messages if m.topic in direct_topics]:
            self._unacked_messages.discard(message)

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _deliver(self, delivery: Awaitable[Any]) -> None:
        """Run Faust's delivery of one message, cancelled if the flow is suspended meanwhile.

        Faust wraps every delivery in `wait_first(delivery, suspend_flow.wait())`: four tasks
        and an `asyncio.wait` per message, which made changelog recovery crawl (bench/README.md).
        Almost every delivery finishes without waiting (the buffer it puts into has room), so
        it is run one step inline first: if that finishes it, nothing could interleave with
        it. Only a delivery that has to wait takes Faust's route, and stays cancellable.
        """
        if not isinstance(delivery, Coroutine):  # Faust's conductor gives one; anything else
            await self.wait_first(delivery, self.suspend_flow.wait())
            return
        try:
            first = delivery.send(None)
        except StopIteration:
            return
        await self.wait_first(_Rest(delivery, first), self.suspend_flow.wait())

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        """Faust's commit, run between two messages (`WorkerApp.turn`).

        Faust computes the offsets from the messages acknowledged so far, and the persist then
        snapshots the states they wrote; holding the turn from the one to the other, no
        message is handled in between. So every output in the transaction belongs to a
        message whose state and offset it commits: a committed output is never sent again.
        """
        app = cast(WorkerApp, self.app)
        if not app.may_commit():
            return False  # without waiting for the message in hand: it may be the failure
        async with app.turn:
            committed: bool = await super()._commit_tps(tps, start_new_transaction)
            return committed

    @Service.task
    async def _commit_handler(self) -> None:
        """Faust's periodic commit, paced by the backlog (`streams.worker.runtime.commit_pace`).

        Like Faust's timer, it keeps its rhythm: the next look comes one interval after the
        last one began, at once if the commit took longer, so a slow commit does not add an
        interval to every output's wait."""
        interval = self.commit_interval
        await self.sleep(interval)
        last = time.monotonic()
        while not self.should_stop:
            began = time.monotonic()
            if commit_due(interval, began - last, self._waiting()):
                await self.commit()
                last = began
            await self.sleep(max(interval - (time.monotonic() - began), 0.0))

    def _waiting(self) -> int:
        """Input messages fetchable and not yet handled, over the assigned partitions."""
        direct_topics = cast(WorkerApp, self.app).direct_topics
        waiting = 0
        for tp in self.assignment():
            read = self._read_offset.get(tp) if tp.topic in direct_topics else None
            # aiokafka's highwater is None until the partition's first fetch, its type aside
            highwater: int | None = None if read is None else self.highwater(tp)
            if read is not None and highwater is not None:
                waiting += max(highwater - read - 1, 0)
        return waiting

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Commit the offsets in the worker's transaction, with the states and outputs of the
        messages before them, instead of through aiokafka (`streams.worker.fencing`)."""
        assignment = self.assignment()
        now = time.monotonic()  # read by Faust's check that commits advance
        self._thread.tp_last_committed_at.update({tp: now for tp in offsets if tp in assignment})
        return await cast(WorkerApp, self.app).commit_offsets(
            {(tp.topic, tp.partition): o for tp, o in offsets.items() if tp in assignment}
        )

    async def on_stop(self) -> None:
        await super().on_stop()  # the final commit, with its persist
        cast(WorkerApp, self.app).after_final_commit()

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition, also those without a committed offset.

        aiokafka seeks only partitions whose committed offset is above 0; the others keep
        whatever position the fetcher reached while recovery finished. After a takeover
        before the first commit, the events fetched in that window were never scored
        (tests/worker/test_operations.py reproduces it: a whole partition lost in 4 of 8 runs
        without this seek, none in 16 with it). Seeking them to the beginning, the reset
        policy anyway, delivers every event; one already scored is a duplicate, a no-op.
        Changelog partitions have no committed offset and stay where recovery put them (sought
        to the beginning too, every standby read its whole changelog again after each
        rebalance).
        """
        committed = await super().seek_to_committed()
        fresh = [
            tp
            for tp, offset in committed.items()
            if (offset is None or offset <= 0) and not self._is_changelog_tp(tp)
        ]
        if fresh:
            await self._thread.seek_to_beginning(*map(aiokafka_driver.ensure_aiokafka_TP, fresh))
        return committed


class _Rest:
    """The rest of a coroutine whose first step already yielded `first` (a future it waits
    for): awaiting this does what `await coroutine` would have done from there on."""

    __slots__ = ("_coroutine", "_first")

    def __init__(self, coroutine: Coroutine[Any, Any, None], first: Any) -> None:
        self._coroutine = coroutine
        self._first = first

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, value = self._coroutine, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as error:  # cancellation included: the coroutine handles it
                try:
                    value = coroutine.throw(error)
                except StopIteration:
                    return
            else:
                try:
                    value = coroutine.send(sent)
                except StopIteration:
                    return


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with a short fetch wait."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        """Faust asks the broker to hold a fetch with no data for up to 1.5 s, and aiokafka
        keeps one fetch in flight per broker. When that fetch covers only idle partitions
        (the ticks, say) while the events wait in the buffer, the next events are fetched
        only after it expires: every event was about 1.5 s late for stretches at 1,000/s
        (bench/README.md). A short wait costs a few empty fetches a second when idle."""
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        read_committed(consumer)
        return consumer


class _Transport(aiokafka_driver.Transport):
    Consumer = _WorkerConsumer


class WorkerApp(faust.App):
    """A Faust app whose consumer hands messages of `direct_topics` to `handle` and commits its
    offsets through `commit_offsets` while `may_commit` (each holding `turn`), and calls
    `after_final_commit` once it has committed for the last time; its recovery calls
    `claim_partitions` first."""

    direct_topics: frozenset[str]
    handle: Callable[[Message], Awaitable[None]]
    commit_offsets: Callable[[Mapping[tuple[str, int], int]], Awaitable[bool]]
    may_commit: Callable[[], bool]
    turn: asyncio.Lock
    """Held while a message is handled and while a commit runs: they never interleave."""
    after_final_commit: Callable[[], None]
    kafka: KafkaConnection
    """How the app's own librdkafka clients connect (the changelog catch-up reader)."""
    claim_partitions: Callable[[set[int]], Awaitable[None]]
    """Claims the input partitions given for this worker's transactions (`fencing`)."""

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)
