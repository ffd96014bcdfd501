"""Fencing: a worker that lost a partition cannot write for it any more.

A worker frozen past its session timeout (a long GC pause, SIGSTOP, a VM migration) keeps
running where it stopped when it wakes: it scores the messages it had fetched and persists
them, although another worker owns the partitions by then. Its changelog records land after
the new owner's, and compaction keeps the last one, so a stale state won the next recovery;
its score updates for a contact erased meanwhile brought the contact back.

Kafka Streams' answer before EOS v2, taken here: every input partition has its own
transactional producer, `transactional.id` = app id + partition. Everything the worker writes
for a partition (outputs, dead letters, changelog records) goes through that producer, inside
a transaction that `persist` commits before it writes RocksDB. A new owner's
`init_transactions` bumps the id's epoch: the broker aborts the old owner's open transaction
and refuses every later write of the old producer (`PRODUCER_FENCED`), so a zombie's writes
are impossible, not unlikely. The new owner claims its partitions when its recovery starts,
before it reads the changelog, so no zombie record can land after recovery read it.

Readers must skip what was aborted: the worker reads its changelog `read_committed` (Faust's
consumer, see `read_committed`, and the catch-up reader), and downstream consumers of the
outputs should too (docs: README "Fencing a worker that lost its partitions").

Ticks are not fenced: they are hints sent through Faust's producer. A zombie's tick makes the
owner advance a contact to a time no later than the owner's own partition clock
(`Processor._tick_time`), as any tick sent before a crash does, and does nothing for a
contact that has no state.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streams.kafka.client import Headers, KeyedProducer, PublishError
from streams.kafka.security import KafkaConnection

logger = logging.getLogger(__name__)

INIT_TIMEOUT = 60.0
"""Seconds `init_transactions` may take: it waits while the broker aborts the old owner's
transaction."""
COMMIT_TIMEOUT = 60.0

Config = Mapping[str, str | int | float | bool]
_FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
"""Delivery errors of a producer whose epoch a newer one bumped."""


class FencedError(RuntimeError):
    """This worker no longer owns the partition: another worker claimed it since (or it was
    never claimed here). What was not committed must be dropped, not persisted."""

    def __init__(self, partition: int, reason: str) -> None:
        super().__init__(f"partition {partition}: {reason}")
        self.partition = partition


def transactional_id(app_id: str, partition: int) -> str:
    """The same for every worker of the app, so a new owner fences the old one."""
    return f"{app_id}-{partition}"


def fatal_cause(error: BaseException) -> KafkaError | None:
    """librdkafka's fatal error behind `error`, if any. A fenced producer raises
    `KafkaException` from produce/commit, or `SystemError` caused by one from poll/flush
    (confluent-kafka raises while running a delivery callback)."""
    for candidate in (error, error.__cause__):
        if isinstance(candidate, KafkaException) and candidate.args:
            kafka_error = candidate.args[0]
            if isinstance(kafka_error, KafkaError) and (
                kafka_error.fatal() or kafka_error.code() == KafkaError._FATAL
            ):
                return kafka_error
    return None


@contextmanager
def _fenced_as(partition: int) -> Iterator[None]:
    try:
        yield
    except (KafkaException, SystemError) as error:
        fatal = fatal_cause(error)
        if fatal is None:
            raise
        raise FencedError(partition, str(fatal)) from error


class PartitionProducer(KeyedProducer):
    """A `KeyedProducer` with one transaction open from its first `send` to `commit` (only
    `send` opens one: the worker's writes are all async)."""

    def __init__(self, kafka: KafkaConnection, config: Config, app_id: str, partition: int) -> None:
        self._app_id = app_id
        super().__init__(kafka, {**config, "transactional.id": transactional_id(app_id, partition)})
        self.partition = partition
        self._open = False
        self._committed = asyncio.Event()
        """Clear while a commit runs in its thread: librdkafka refuses produce calls then."""
        self._committed.set()

    def claim(self) -> None:
        """Fence every earlier producer of the partition (blocking: for a thread)."""
        try:
            self._producer.init_transactions(INIT_TIMEOUT)
        except KafkaException as error:
            raise RuntimeError(
                f"cannot start the transactional producer of partition {self.partition}: "
                f"{error}. The broker must allow transactions: a "
                "transaction.state.log.replication.factor no larger than the broker count, "
                "and, where ACLs are enforced, Write and Describe on the transactional ids "
                f"{self._app_id}-<partition>"
            ) from error

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Queue one message in the open transaction, opening one if need be."""
        await self._committed.wait()
        with _fenced_as(self.partition):
            if not self._open:
                self._producer.begin_transaction()
                self._open = True
            await super().send(topic, key, value, headers, partition)

    async def wait_delivered(self) -> None:
        with _fenced_as(self.partition):
            await super().wait_delivered()

    def check(self) -> None:
        try:
            super().check()
        except PublishError as error:
            if any(e.code() in _FENCED_CODES or e.fatal() for e in error.errors):
                raise FencedError(self.partition, str(error)) from error
            raise

    async def commit(self) -> None:
        """Commit the open transaction, if any: everything sent so far becomes visible to
        `read_committed` readers at once, or nothing does."""
        if not self._open:
            return
        # Delivery callbacks run in the thread that polls: serve them all here, so that the
        # commit's own flush, in its thread, has none left to run beside the event loop.
        await self.wait_delivered()
        self.check()
        self._committed.clear()
        try:
            await asyncio.to_thread(self._commit)
        finally:
            self._open = False
            self._committed.set()

    def _commit(self) -> None:
        try:
            with _fenced_as(self.partition):
                self._producer.commit_transaction(COMMIT_TIMEOUT)
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            if isinstance(kafka_error, KafkaError) and kafka_error.txn_requires_abort():
                self._producer.abort_transaction(COMMIT_TIMEOUT)
            raise

    def close(self) -> None:
        """Never raises: it runs while the worker stops, and an error there would leave the
        consumer's thread running (the process then never exits). A fenced producer cannot
        abort its open transaction (its new owner did) and says so; that is expected."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                self._producer.close()
            except KafkaException as error:
                logger.info("closed the producer of partition %s: %s", self.partition, error)


class PartitionProducers:
    """The transactional producers of the partitions this worker owns."""

    def __init__(self, kafka: KafkaConnection, config: Callable[[], Config], app_id: str) -> None:
        self._kafka = kafka
        self._config = config
        self._app_id = app_id
        self._producers: dict[int, PartitionProducer] = {}
        self._lock = asyncio.Lock()

    def producer(self, partition: int) -> PartitionProducer:
        """The partition's producer; `FencedError` if this worker has not claimed it."""
        producer = self._producers.get(partition)
        if producer is None:
            raise FencedError(partition, "not claimed by this worker")
        return producer

    async def claim(self, partitions: set[int]) -> None:
        """Own exactly `partitions` from now on; return once every earlier producer of each
        is fenced. Every owned partition gets a new producer, also one owned before the
        rebalance: had another worker claimed it in between (while this one was frozen),
        the old producer would be fenced already."""
        async with self._lock:
            old, self._producers = self._producers, {}
            for producer in old.values():
                producer.close()  # no transaction is open: the revocation persisted
            config = self._config()
            fresh = {
                partition: PartitionProducer(self._kafka, config, self._app_id, partition)
                for partition in sorted(partitions)
            }
            await asyncio.gather(*(asyncio.to_thread(p.claim) for p in fresh.values()))
            self._producers = fresh
            logger.info("claimed partitions %s", sorted(partitions))

    async def barrier(self) -> None:
        """Return once everything sent so far is acknowledged; raise if anything was refused."""
        for producer in list(self._producers.values()):
            await producer.wait_delivered()
            producer.check()

    async def commit(self) -> None:
        """Commit every open transaction (concurrently: each is a round trip)."""
        async with self._lock:
            await asyncio.gather(*(p.commit() for p in self._producers.values()))

    def close(self) -> None:
        for producer in self._producers.values():
            producer.close()
        self._producers = {}


def read_committed(consumer: Any) -> None:
    """Make an aiokafka consumer, before it starts, skip aborted records and transaction
    markers. Faust asks for `read_committed` only under its own `exactly_once` guarantee,
    which the worker does not use: its exactness rests on `states.py`, not on Faust's
    transactions, which are reported unreliable upstream."""
    consumer._isolation_level = "read_committed"
