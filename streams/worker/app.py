"""The Faust application: topics, the consumer, the contact table, the timer, the web views.

Everything is built by `build_worker` from settings and loaded plans, with no module-level
app, so a test or the demo can build a worker with its own prefix, ports and data dir.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.tables.manager import TableManager
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, TransportT
from faust.types.tuples import Message
from mode import Service, ServiceT

from streams.kafka import records
from streams.kafka.admin import TopicSpec
from streams.kafka.client_logs import CLIENT_REPEATS, quiet_aiokafka
from streams.kafka.security import KafkaConnection
from streams.models.plan_versions import PlanHistory
from streams.scoring import PlanSet
from streams.worker import collector, dead_letters
from streams.worker.crash import crash_without_commit
from streams.worker.fencing import (
    FencedError,
    Transactions,
    member_of,
    read_committed,
    transaction_timeout_ms,
)
from streams.worker.leads import ENCODERS, LeadRecords
from streams.worker.leads_query import segment_sizes
from streams.worker.live_plans import LivePlans
from streams.worker.metrics import Metrics
from streams.worker.outbox import Outbox
from streams.worker.plan_switch import SwitchPasses
from streams.worker.processor import Processor, plan_event_types
from streams.worker.recovery import CatchUpTableManager
from streams.worker.reroute import Rerouter
from streams.worker.rescoring import Rescores
from streams.worker.seeking import SeekGate
from streams.worker.settings import WorkerSettings
from streams.worker.states import ContactStates
from streams.worker.store import ContactTable
from streams.worker.timers import Timers
from streams.worker.topic_settings import changelog_config, retention_config
from streams.worker.web import ContactRouter, register_views

logger = logging.getLogger(__name__)

TABLE = "contacts"
ROCKSDB_OPTIONS = {
    "block_cache_size": 16 * 1024**2,
    "write_buffer_size": 16 * 1024**2,
    "max_write_buffer_number": 2,
}
"""Per partition database. Faust's defaults (2 GiB block cache, 3 x 64 MiB write buffers) would
reserve gigabytes for a handful of partitions; contact records are small and hot ones live in
the write-back cache anyway."""

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


@dataclass(slots=True)
class Worker:
    """One worker's app and parts, kept together so tests and the CLI can reach them."""

    settings: WorkerSettings
    live: LivePlans
    app: WorkerApp
    table: ContactTable
    states: ContactStates
    timers: Timers
    processor: Processor
    metrics: Metrics
    dead_letter_limit: Callable[[], int]
    """The dead-letter topic's `max.message.bytes`, read once (the CLI checks it at start)."""

    def topic_specs(self) -> list[TopicSpec]:
        """Topics to create before starting; the first five are co-partitioned."""
        settings = self.settings
        topics, n = settings.topics, settings.partitions
        changelog = changelog_config(settings.erasure_bound)  # also erases from lead-scores
        outputs = retention_config(settings.output_retention)
        return [
            TopicSpec(topics.events, n),
            TopicSpec(topics.ticks, n),
            TopicSpec(topics.rerouted, n),
            TopicSpec(
                self.table.changelog_topic.get_topic_name(),
                n,
                config=changelog,
                enforce_config=True,
            ),
            TopicSpec(topics.leads, n, config=changelog, enforce_config=True),
            TopicSpec(topics.alerts, n, copartitioned=False, config=outputs),
            TopicSpec(topics.updates, n, copartitioned=False, config=outputs),
            TopicSpec(
                topics.dead_letters,
                n,
                copartitioned=False,
                config=retention_config(settings.dlq_retention),
            ),
        ]

    def ready(self) -> bool:
        """Recovered and not rebalancing: what `/readyz` reports.

        A worker without partitions (more workers than partitions) is ready too: it still
        answers look-ups by forwarding them to the owners.
        """
        app = self.app
        return (
            cast(TableManager, app.tables).recovery.completed.is_set()
            and not app.rebalancing
            and not app.in_recovery
        )

    def now(self) -> float:
        """The worker's time for its plans (a version without `effective_from` takes over
        then): the wall clock, or under `--clock event` the largest stream time of its
        partitions, the wall clock while it has none."""
        if self.settings.clock == "event" and self.ready():
            times = [self.states.stream_time(p) for p in self.active_partitions()]
            known = [moment for moment in times if moment is not None]
            if known:
                return max(known)
        return time.time()

    def active_partitions(self) -> list[int]:
        """Partitions of the input topic this worker processes (not standbys)."""
        events = self.settings.topics.events
        return sorted(
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == events
        )

    async def refresh_metrics(self) -> None:
        """Set the gauges that describe live state, just before a scrape."""
        metrics, app = self.metrics, self.app
        ready = self.ready()
        metrics.ready.set(ready)
        self.live.refresh()
        metrics.recovering.set(bool(app.in_recovery))
        if not ready:
            return
        partitions = self.active_partitions()
        metrics.contacts.set(sum(self.table.store.contact_count(p) for p in partitions))
        metrics.set_threshold_counts(segment_sizes(self.table.store, partitions, self.live.current))
        lag: dict[tuple[str, int], int] = {}
        commit_lag: dict[tuple[str, int], int] = {}
        topics = self.settings.topics
        assigned = app.consumer.assignment()
        committed = cast(_WorkerConsumer, app.consumer)._committed_offset
        for topic in (topics.events, topics.ticks, topics.rerouted):
            for partition in partitions:
                tp = TP(topic, partition)
                # Unknown until the consumer has fetched from the partition: no sample then.
                highwater: int | None = app.consumer.highwater(tp) if tp in assigned else None
                if highwater is None:
                    continue
                done = self.processor.processed.get((topic, partition))
                if done is None:
                    position = await app.consumer.position(tp)
                    done = -1 if position is None else position - 1
                lag[(topic, partition)] = max(highwater - done - 1, 0)
                commit_lag[(topic, partition)] = max(highwater - (committed.get(tp) or 0), 0)
        metrics.set_lag(lag, commit_lag)


def build_worker(settings: WorkerSettings, plans: PlanSet | PlanHistory) -> Worker:
    """Assemble the Faust app; nothing connects to Kafka until the app starts."""
    history = plans if isinstance(plans, PlanHistory) else PlanHistory.single(plans)
    topics = settings.topics
    app = WorkerApp(
        settings.faust_id,
        broker=settings.kafka.faust_brokers(),
        broker_credentials=settings.security.faust_credentials(),
        datadir=str(settings.data_dir),
        store="rocksdb://",
        topic_partitions=settings.partitions,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.web_url,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        producer_linger=0.02,
        producer_max_batch_size=1024**2,
        stream_wait_empty=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_commit_interval=settings.commit_interval,
        TableManager=CatchUpTableManager,
        Router=ContactRouter,
    )
    app.kafka = settings.kafka
    app.turn = asyncio.Lock()
    quiet_aiokafka(CLIENT_REPEATS)
    records.install()  # a header name that is not UTF-8 is dead-lettered, not fatal
    table = ContactTable(
        app,
        name=TABLE,
        beacon=app.tables.beacon,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        options=ROCKSDB_OPTIONS,
        help="Scoring state per contact (see streams/worker/store.py for the layout).",
    )
    app.tables.add(table)
    metrics = Metrics(t for v in history.versions for t in plan_event_types(v.plans))
    live = LivePlans(history, metrics.registry, lambda: worker.now())  # noqa: PLW0108  # `worker` is built below

    @functools.cache
    def dead_letter_limit() -> int:
        return dead_letters.read_max_message_bytes(settings.kafka, topics.dead_letters)

    def producer_config() -> dict[str, Any]:
        """Read when partitions are first claimed: nothing connects before the app starts."""
        limits = dead_letters.producer_limits(dead_letter_limit())
        timeout = transaction_timeout_ms(settings.commit_interval)
        return {"client.id": settings.faust_id, "transaction.timeout.ms": timeout, **limits}

    # Outputs, dead letters, the changelog and the input offsets (not Faust's producer: see
    # `Outbox`), one transaction at a time, fenced by the consumer group (`fencing`).
    producer = Transactions(
        settings.kafka,
        producer_config,
        settings.faust_id,
        settings.data_dir,
        lambda: member_of(app.consumer),
    )
    app.claim_partitions = functools.partial(
        producer.claim,
        (topics.events, topics.ticks, topics.rerouted),
        table.changelog_topic.get_topic_name(),
    )
    outbox = Outbox(producer, topics, dead_letter_limit)
    states = ContactStates(
        lambda: table.store,
        producer,
        table.changelog_topic.get_topic_name(),
        live,
        outbox.barrier,
        (
            LeadRecords(topics.leads, lambda: table.store, ENCODERS[settings.lead_scores_format])
            if settings.lead_scores
            else None
        ),
    )
    timers = Timers(
        settings.clock,
        states,
        lambda: table.store,
        lambda: app.producer,
        topics.ticks,
        SwitchPasses(live),
    )
    rerouter = Rerouter(topics.events, settings.partitions, outbox, metrics)
    processor = Processor(
        live,
        topics,
        states,
        outbox,
        timers,
        metrics,
        rerouter,
        history_size=settings.history_size,
        lateness=settings.lateness,
    )
    worker = Worker(
        settings, live, app, table, states, timers, processor, metrics, dead_letter_limit
    )
    processor.rescores = live.rescorer = Rescores(
        settings, live, states, outbox, processor.processed, timers, metrics,
        worker.active_partitions,
    )  # fmt: skip
    _wire(worker, producer)
    register_views(worker)
    return worker


def _wire(worker: Worker, producer: Transactions) -> None:
    app, states, timers, metrics = worker.app, worker.states, worker.timers, worker.metrics
    topics = worker.settings.topics
    source = app.topic(
        topics.events,
        topics.ticks,
        topics.rerouted,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def stop_fenced(error: FencedError) -> None:
        # Another worker owns the partition now and replays from its last commit: drop the
        # states not made durable, write no RocksDB, commit nothing, and let the orchestrator
        # restart this worker, which then joins the group like any new one.
        logger.critical("fenced (%s): another worker owns it; stopping without commit", error)
        await crash_without_commit(states.poison, app.crash, error)

    full_passes = collector.FullPasses()

    async def persist(offsets: Mapping[tuple[str, int], int] | None = None) -> bool:
        """Make states durable, in one transaction with `offsets`; False, with nothing done,
        once stopping after a failure (the successor replays from the last commit)."""
        if states.poisoned:
            return False
        started = time.perf_counter()
        try:
            persisted = await states.persist(offsets)
        except FencedError as error:
            await stop_fenced(error)
            raise
        timers.settled(persisted)
        metrics.persisted.inc(persisted.count)
        metrics.persist.observe(time.perf_counter() - started)
        full_passes.after_persist()
        return True

    app.commit_offsets = persist
    app.may_commit = lambda: not states.poisoned

    def close_store() -> None:
        worker.table.store.close()  # looked up now: Faust builds the store when it starts
        producer.close()

    app.after_final_commit = close_store

    async def handle(message: Message) -> None:
        try:
            await worker.processor.handle(message)
        except FencedError as error:
            await stop_fenced(error)
            raise
        except Exception as error:
            # Bad input and failures of the core never get here (the processor dead-letters
            # them): this is the shell failing, e.g. an output refused. Skipping the message
            # would lose its points, so stop without committing instead.
            logger.critical(
                "scoring failed at %s[%s]@%s; stopping without commit",
                message.topic,
                message.partition,
                message.offset,
            )
            await crash_without_commit(states.poison, app.crash, error)
            raise

    app.direct_topics = frozenset(source.topics)
    app.handle = handle
    app.topics.add(source)  # subscribes the consumer; see `_WorkerConsumer._drain_messages`

    async def timer_pass() -> None:
        if not worker.ready():
            return
        started = time.perf_counter()
        sent = await timers.run_pass(worker.active_partitions())
        metrics.ticks_sent.inc(sent)
        metrics.timer_pass.observe(time.perf_counter() - started)

    app.timer(worker.settings.timer_interval, name="deadlines")(timer_pass)

    async def on_revoked(_sender: Any, *args: Any, signal: object, **_: Any) -> None:
        """Persist before the partitions move, so their new owner starts from our work."""
        revoked: set[TP] = args[0]  # the signal's one argument
        async with app.turn:
            await persist()
        gone = {tp.partition for tp in revoked if tp.topic == topics.events}
        states.forget(gone)
        timers.forget(gone)
        if worker.processor.rescores is not None:
            worker.processor.rescores.forget(gone)

    # mode types handlers with mypy_extensions.VarArg(), which no real signature matches.
    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

    async def quiet_root_logger() -> None:
        # Faust's worker sets the root logger to DEBUG for its start-up spinner, which makes
        # every logger.debug() in the hot path build a record. Put back the configured level.
        logging.getLogger().setLevel(worker.settings.log_level.upper())

    app.task(quiet_root_logger)

    async def settle_collector() -> None:
        collector.settle_after_start()

    app.task(settle_collector)
