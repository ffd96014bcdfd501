"""The Faust application: topics, the consumer, the contact table, the timer, the web views.

Everything is built by `build_worker` from settings and loaded plans, with no module-level
app, so a test or the demo can build a worker with its own prefix, ports and data dir.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from faust.tables.manager import TableManager
from faust.types import TP
from faust.types.tuples import Message

from streams.kafka import records
from streams.kafka.admin import TopicSpec
from streams.kafka.client_logs import CLIENT_REPEATS, quiet_aiokafka
from streams.models.plan_versions import PlanHistory
from streams.scoring import PlanSet
from streams.worker.flow import dead_letters
from streams.worker.flow.outbox import Outbox
from streams.worker.flow.processor import Processor, plan_event_types
from streams.worker.flow.reroute import Rerouter
from streams.worker.flow.switch import SwitchPasses
from streams.worker.flow.timers import Timers
from streams.worker.plans.live import LivePlans
from streams.worker.rescore.rescoring import Rescores
from streams.worker.runtime import collector
from streams.worker.runtime.commit_pace import longest_interval
from streams.worker.runtime.crash import crash_without_commit
from streams.worker.runtime.faust_app import WorkerApp, _WorkerConsumer
from streams.worker.runtime.fencing import (
    FencedError,
    Transactions,
    member_of,
    transaction_timeout_ms,
)
from streams.worker.runtime.topic_settings import changelog_config, retention_config
from streams.worker.settings import WorkerSettings
from streams.worker.state.leads import ENCODERS, LeadRecords
from streams.worker.state.recovery import CatchUpTableManager
from streams.worker.state.states import ContactStates
from streams.worker.state.store import ContactTable
from streams.worker.web.leads_query import segment_sizes
from streams.worker.web.metrics import Metrics
from streams.worker.web.views import ContactRouter, register_views

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
        help="Scoring state per contact (see streams/worker/state/store.py for the layout).",
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
        timeout = transaction_timeout_ms(longest_interval(settings.commit_interval))
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
        metrics.flush()
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
