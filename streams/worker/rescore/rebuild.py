"""Rebuilding a partition's contacts from the retained log, for a `change: rescore` version.

Kafka is the log of record: the contacts of input partition `p` are made of the events of the
input topic's partition `p` whose key belongs there, plus those forwarded to partition `p` of
the rerouted topic by whichever worker consumed them (`streams.worker.flow.reroute`). A rebuild
reads both from the beginning with librdkafka (no group, `read_committed` like every reader
of the worker's transactional topics), merges each contact's events from both by event time
(`_Forwarded`), as the backtest orders a file, and replays them into fresh states with the
new version's plans, through the live path's own pieces: `read_event` and `Routing` decide
what is skipped (what the live path dead-lettered, which is not sent again, and what it
forwarded), `Held` which event is a duplicate by its origin, and the core the rest. The
rebuilt records keep the origins applied, so after the swap the live path treats an event
consumed again as the duplicate it is.

The worker keeps scoring and answering look-ups with the old states meanwhile:

1. `rebuild_partition` replays, in a thread beside the event loop, up to the positions the
   live path had processed when the version arrived;
2. `Rebuilt.catch_up` replays what the live path processed since, while the partition is
   held (between two of its messages);
3. `Rebuilt.swap` rescores every contact of the partition (`streams.scoring.engine.rescore`:
   old state against rebuilt one), sends the changes, and writes the new records; the next
   persist makes both durable together, as for any event.

The rebuilt states are held in memory until the swap, frozen for the cyclic collector
(`collector.freeze_survivors`): about the size of the partition's decoded states
(bench/README.md, "Rebuilding a partition", gives the time per million events and the memory).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from faust.types.tuples import Message

from streams.kafka.records import HeaderNameError, confluent_headers
from streams.kafka.security import KafkaConnection
from streams.models.events import EventError, TrackingEvent
from streams.models.plan_versions import PlanHistory, PlanVersion
from streams.scoring import ContactState, Outcome, Output, PlanSet, score_event
from streams.scoring.engine import plans_for, rescore
from streams.scoring.state import copy_state
from streams.worker.flow.outbox import Outbox
from streams.worker.flow.reroute import Routing, read_event
from streams.worker.runtime import collector
from streams.worker.settings import WorkerSettings
from streams.worker.state.history import DEFAULT_SIZE, EMPTY
from streams.worker.state.states import ContactStates, Held, Origin
from streams.worker.web.metrics import Metrics, RescoreMetrics

logger = logging.getLogger(__name__)

BATCH = 10_000
"""Messages taken from librdkafka per call."""
CONSUME_WAIT = 0.1
"""Seconds a call waits for a batch to fill: at the end of what is there, it waits this long
for nothing, and a catch-up holds its partition meanwhile."""
FETCH_BYTES = 64 * 1024**2
READ_TIMEOUT = 120.0
"""Seconds a rebuild may go without reaching an end it was given (a broker that does not
answer, or an end the partition never had) before it fails."""

Ends = Mapping[str, int]
"""Per topic (the input and the rerouted one): the offset after the last message the live path
processed on the partition, where a read stops."""


@dataclass(frozen=True, slots=True)
class HistorySource:
    """Where a partition's history is and how to read it."""

    kafka: KafkaConnection
    events: str
    rerouted: str
    partitions: int
    group_id: str
    """librdkafka wants one; nothing is committed under it (partitions are assigned)."""

    @classmethod
    def of(cls, settings: WorkerSettings) -> HistorySource:
        topics = settings.topics
        return cls(
            settings.kafka,
            topics.events,
            topics.rerouted,
            settings.partitions,
            f"{settings.faust_id}-rebuild",
        )

    @property
    def topics(self) -> tuple[str, str]:
        return self.events, self.rerouted


class Swap(NamedTuple):
    """What a swap did to a partition."""

    contacts: int
    changed: int
    """Contacts with at least one output (a score or a threshold membership changed)."""
    outputs: int


class _Pending(NamedTuple):
    time: float
    event: TrackingEvent
    origin: Origin


class _CoreFailedError(Exception):
    """The core raised during a fast replay: the partition is replayed again, safely."""


class RebuildCancelledError(Exception):
    """The rebuild was cancelled (the partition moved, or the worker stops)."""


async def rebuild_partition(
    source: HistorySource,
    partition: int,
    ends: Ends,
    version: PlanVersion,
    metrics: Metrics,
) -> Rebuilt:
    """Replay `partition`'s retained history up to `ends` with `version`'s plans, in a thread;
    cancelling the task stops the thread at its next batch."""
    rebuilt = Rebuilt(source, partition, version, metrics)
    await rebuilt.read(ends, "replay")
    return rebuilt


class Rebuilt:
    """A partition's contacts replayed from the log with a new version, until they are swapped
    in: `states` are the rebuilt records, `positions` where the next read starts per topic."""

    def __init__(
        self, source: HistorySource, partition: int, version: PlanVersion, metrics: Metrics
    ) -> None:
        self.source = source
        self.partition = partition
        self.version = version
        self.states: dict[str, Held] = {}
        self.positions: dict[str, int] = {}
        """Next offset to read per topic; absent before the first read (the log's start)."""
        self.missing = 0
        """Offsets deleted before the first read reached them (retention), both topics."""
        self._starts: dict[str, int] = {}
        self._safe = False
        self._metrics = metrics
        self._rescore: RescoreMetrics = metrics.rescore
        self._routing = Routing(source.events, source.partitions)
        self._plans: PlanSet = version.plans

    async def catch_up(self, ends: Ends) -> None:
        """Replay what the live path processed since the last read, up to `ends`; the caller
        holds the partition meanwhile, so nothing is scored twice or missed at the swap."""
        await self.read(ends, "catch_up")

    async def read(self, ends: Ends, phase: str) -> None:
        """Read and replay up to `ends` in a thread, timed as `phase`."""
        cancelled = threading.Event()
        with (
            self._rescore.seconds.labels(phase).time(),
            self._rescore.rebuilding.track_inprogress(),
        ):
            try:
                await asyncio.to_thread(self._read, ends, cancelled)
            except asyncio.CancelledError:
                cancelled.set()  # the thread stops at its next batch
                raise

    def rescored(
        self,
        contact_id: str,
        old: Held | None,
        old_plans: PlanSet | PlanHistory,
        at: float,
        history_size: int = DEFAULT_SIZE,
    ) -> tuple[Held, list[Output]]:
        """A contact's record after the swap, and what changed for its readers.

        A contact with no retained event (its history deleted by retention) starts from
        nothing, but keeps an erasure: the tombstone is the only record of it left. Its score
        history goes on, with the rescore's changes."""
        held = self.states.get(contact_id)
        if held is None:
            erased_at = None if old is None else old.state.erased_at
            held = Held(ContactState(contact_id=contact_id, erased_at=erased_at))
        applied = dict(held.applied)
        if old is not None:
            for partition, offset in old.applied.items():
                applied[partition] = max(offset, applied.get(partition, -1))
        before = None if old is None else old.state
        if isinstance(old_plans, PlanHistory):  # the version the contact was scored with
            old_plans = self._plans if before is None else plans_for(before, old_plans)
        state, outputs = rescore(before, old_plans, held.state, self.version, at)
        ledger = EMPTY if old is None else old.history
        history = ledger.recorded(outputs, history_size, self._plans.active_names)
        return Held(state, applied, history), outputs

    async def swap(
        self,
        states: ContactStates,
        outbox: Outbox,
        old_plans: PlanSet | PlanHistory,
        at: float,
        history_size: int = DEFAULT_SIZE,
    ) -> Swap:
        """Rescore every contact of the partition (old or rebuilt) at `at`: send its changes,
        then write its new record, as the processor does for an event, so that a persist
        between two contacts makes durable only contacts whose outputs were acknowledged
        (`streams.worker.state.states`). Rescoring a contact again changes nothing and sends
        nothing, so a swap cut short by a crash can simply be done again.

        Call it with the partition held, right after `catch_up`; the rebuilt states belong to
        `states` afterwards."""
        partition = self.partition
        changed = sent = 0
        with self._rescore.seconds.labels("swap").time():
            contact_ids = sorted(states.contact_ids(partition) | self.states.keys())
            for contact_id in contact_ids:
                held, outputs = self.rescored(
                    contact_id, states.get(partition, contact_id), old_plans, at, history_size
                )
                if outputs:
                    changed += 1
                    sent += len(outputs)
                    await outbox.send(partition, outputs)
                    self._metrics.outputs_sent(outputs, timer=False)
                states.put(partition, contact_id, held)
        self.states = {}
        logger.info(
            "partition %s rescored with %s: %s contacts, %s changed, %s outputs",
            partition,
            self.version.describe(),
            len(contact_ids),
            changed,
            sent,
        )
        return Swap(len(contact_ids), changed, sent)

    # --- reading, in a thread ----------------------------------------------------------------

    def _read(self, ends: Ends, cancelled: threading.Event) -> None:
        """Replay fast, the core changing the states in place; if it fails on an event (a bug),
        that contact's state may be half changed, so replay the partition again from its start,
        each state copied before the core gets it (as `streams.backtest.replay` does): the
        failing events then leave their contacts as they were, as the live path's
        dead-lettering does. The copies cost nothing while the core does not fail."""
        source = self.source
        consumer = Consumer(
            source.kafka.librdkafka(
                {
                    "group.id": source.group_id,
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "fetch.max.bytes": FETCH_BYTES,
                    "isolation.level": "read_committed",  # skip what a fenced worker wrote
                }
            )
        )
        try:
            if not self._starts:
                self._find_starts(consumer)
            try:
                self._replay(consumer, ends, cancelled)
            except _CoreFailedError:
                logger.warning(
                    "rescore of partition %s: the core failed on an event; replaying the "
                    "partition again, each state copied before the core gets it",
                    self.partition,
                )
                self._safe = True
                self.states, self.positions = {}, dict(self._starts)
                self._replay(consumer, ends, cancelled)
        finally:
            consumer.close()

    def _replay(self, consumer: Consumer, ends: Ends, cancelled: threading.Event) -> None:
        """The rerouted partition first, whole (it holds only what producers mis-keyed), then
        the input partition as it streams by, each event after its contact's forwarded ones
        that are older (`_Forwarded`)."""
        source = self.source
        forwarded: dict[str, _Forwarded] = {}
        for record in self._records(consumer, source.rerouted, ends[source.rerouted], cancelled):
            pending = self._admit(record)
            if pending is not None:
                contact_id = pending.event.contact_id
                queue = forwarded.get(contact_id)
                if queue is None:
                    queue = forwarded[contact_id] = _Forwarded()
                queue.add(pending)
        for record in self._records(consumer, source.events, ends[source.events], cancelled):
            pending = self._admit(record)
            if pending is None:
                continue
            queue = forwarded.get(pending.event.contact_id)
            if queue is not None:
                for earlier in queue.before(pending.time):
                    self._score(earlier)
            self._score(pending)
        for queue in forwarded.values():
            for rest in queue.before(math.inf):
                self._score(rest)

    def _find_starts(self, consumer: Consumer) -> None:
        """Start at each topic's first retained offset; say so when history was deleted."""
        partition = self.partition
        for topic in self.source.topics:
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            self._starts[topic] = self.positions[topic] = low
            if low > 0:
                logger.warning(
                    "rescore of partition %s: %s[%s] starts at offset %s, the records before "
                    "were deleted (retention); the rebuild covers the retained part only. Keep "
                    "the whole history with retention.ms=-1 or tiered storage on this topic",
                    partition,
                    topic,
                    partition,
                    low,
                )
                self.missing += low
        if self.missing:
            self._rescore.partial.inc()
        self._rescore.missing.labels(str(partition)).set(self.missing)

    def _records(
        self, consumer: Consumer, topic: str, end: int, cancelled: threading.Event
    ) -> Iterator[KafkaMessage]:
        """The records of `topic`'s partition from `positions[topic]` up to `end` (excluded),
        moving `positions[topic]` to `end` once they are all read."""
        partition, start = self.partition, self.positions[topic]
        if start >= end:
            return
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + READ_TIMEOUT
        try:
            while self.positions[topic] < end:
                if cancelled.is_set():
                    raise RebuildCancelledError(f"rebuild of partition {partition} cancelled")
                batch = consumer.consume(BATCH, timeout=CONSUME_WAIT)
                read = 0
                for record in batch:
                    error = record.error()
                    if error is not None and error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    offset = cast(int, record.offset())
                    if error is None and offset < end:
                        read += 1
                        yield record
                    self.positions[topic] = min(max(self.positions[topic], offset + 1), end)
                self._rescore.replayed.inc(read)
                collector.freeze_survivors()  # the states live until the swap
                (position,) = consumer.position([TopicPartition(topic, partition)])
                if position.offset >= end:  # past a trailing transaction marker, which no
                    self.positions[topic] = end  # consumer receives
                if batch:
                    deadline = time.monotonic() + READ_TIMEOUT
                elif time.monotonic() > deadline:
                    raise TimeoutError(
                        f"rebuild could not read {topic}[{partition}] from "
                        f"{self.positions[topic]} up to {end} in {READ_TIMEOUT:.0f} s"
                    )
        finally:
            consumer.unassign()

    def _admit(self, record: KafkaMessage) -> _Pending | None:
        """A consumed record's event, unless the live path did not score it here: what it
        dead-lettered (bad input, counted and sent then; a header name that is not UTF-8 too,
        `bad-header`) and what it forwarded."""
        kind, stamp = record.timestamp()
        try:
            headers = confluent_headers(record)
        except HeaderNameError:
            return None
        message = Message(
            cast(str, record.topic()),
            self.partition,
            cast(int, record.offset()),
            stamp / 1000,
            kind,
            cast("list[tuple[str, bytes]] | None", headers),  # Faust's type omits null values
            record.key(),
            record.value(),
            None,
        )
        try:
            event, origin = read_event(message, self._routing)
        except EventError:
            return None
        if self._routing.owner(message) is not None:
            return None
        return _Pending(event.time, event, origin)

    def _score(self, pending: _Pending) -> None:
        """What the processor does with an event, without sending anything: skip an origin
        already applied, keep the state only when the core applied the event."""
        event, origin = pending.event, pending.origin
        contact_id = event.contact_id
        held = self.states.get(contact_id)
        if held is not None and held.applied_at(origin):
            return
        if not self._safe:
            try:
                step = score_event(None if held is None else held.state, event, self._plans)
            except Exception as error:
                raise _CoreFailedError from error
        else:
            try:  # a copy, so that a failing call leaves the contact as it was
                state = None if held is None else copy_state(held.state)
                step = score_event(state, event, self._plans)
            except Exception:
                logger.exception(
                    "rescore of partition %s: scoring failed at origin %s; the contact is "
                    "rebuilt without the event",
                    self.partition,
                    origin,
                )
                self._rescore.scoring_errors.inc()
                return
        if step.outcome is Outcome.APPLIED:
            self.states[contact_id] = (held or Held(step.state)).after(step.state, origin)


class _Forwarded:
    """One contact's events of the rerouted partition, one queue per input partition they were
    first consumed on, each in that partition's order, handed out oldest head first.

    Why per contact and per origin: the core's results depend on the order of each contact's
    events, not on how contacts interleave. Each input partition's events reach the rerouted
    topic in its order, but the forwards of two input partitions interleave as the forwarding
    worker happened to consume them, and the input partition interleaves its producers as they
    happened to send. Merged this way, a contact's events come in time order whenever each of
    its producers sent them so, as the backtest replays a file; the order within an origin is
    kept in any case, which the duplicate check by origin relies on (`Held.applied_at`)."""

    def __init__(self) -> None:
        self._queues: dict[int, deque[_Pending]] = {}
        self._heads: list[tuple[float, int]] = []
        """(time of the head, origin partition) of every non-empty queue, a heap."""

    def add(self, pending: _Pending) -> None:
        origin = pending.origin[0]
        queue = self._queues.get(origin)
        if queue is None:
            queue = self._queues[origin] = deque()
        if not queue:
            heapq.heappush(self._heads, (pending.time, origin))
        queue.append(pending)

    def before(self, moment: float) -> Iterator[_Pending]:
        """Take out, oldest head first, every head older than `moment` (the input's own event
        goes first at equal times)."""
        heads, queues = self._heads, self._queues
        while heads and heads[0][0] < moment:
            _, origin = heapq.heappop(heads)
            queue = queues[origin]
            yield queue.popleft()
            if queue:
                heapq.heappush(heads, (queue[0].time, origin))
