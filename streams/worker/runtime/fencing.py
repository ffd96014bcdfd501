"""Fencing: a worker that lost its partitions cannot make anything visible for them any more.

A worker frozen past its session timeout (a long GC pause, SIGSTOP, a VM migration) keeps
running where it stopped when it wakes: it scores the messages it had fetched and persists
them, although another worker owns the partitions by then. Its changelog records would land
after the new owner's, and compaction keeps the last one, so a stale state would win the next
recovery; its score updates for a contact erased meanwhile would bring the contact back.

Kafka Streams' EOS v2 (KIP-447), taken here: the worker has ONE transactional producer.
Everything it writes (outputs, dead letters, forwards, changelog records) goes into that
producer's open transaction, and the consumed input offsets join the same transaction
(`send_offsets_to_transaction`) with the consumer group's metadata: the group id, the member
id and the generation under which this worker was given its partitions. `persist` commits the
transaction before it writes RocksDB. The group coordinator refuses the offsets of a member
whose generation is over (`ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`): the transaction is then
aborted, so none of its outputs or changelog records ever become visible to `read_committed`
readers, and the worker stops without writing RocksDB. A zombie is fenced by the group, not by
a transactional id per partition (Kafka Streams' EOS v1, which this module used before).

The group metadata is what librdkafka's `consumer_group_metadata()` serialises; the member is
Faust's aiokafka consumer, so `group_metadata` writes the same bytes from its membership
(tests/worker/runtime/test_faust_internals.py pins the format and the attributes read).

A new owner must not read a partition while a transaction of its old owner that holds offsets
for it is still open: when it commits, those offsets and changelog records become the truth.
`Transactions.claim`, run before recovery reads the changelog, asks the coordinator for the
committed offsets with `require_stable` (librdkafka does under `read_committed`), which waits
until no such transaction is pending, then until no transaction is open on the partition's
changelog (the last stable offset reaches the log's end). An open transaction of a zombie
that holds no offsets yet can never commit: its offsets would be refused. The broker aborts it
after `transaction.timeout.ms` (`transaction_timeout_ms`); until then `read_committed`
readers of the partitions it wrote to wait, and so does the new owner's recovery.

A worker frozen past the transaction timeout finds its open transaction aborted by the broker
and stops the same way.

The transactional id is the app id plus an id kept in the worker's data directory: a worker
restarted on the same directory (the usual restart after a crash) aborts its predecessor's
open transaction at once in `init_transactions`, instead of after the timeout. Two live
workers never share a data directory (RocksDB locks it).

Ticks are not fenced: they are hints sent through Faust's producer. A zombie's tick makes the
owner advance a contact to a time no later than the owner's own partition clock
(`Processor._tick_time`), as any tick sent before a crash does, and does nothing for a
contact that has no state.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTP

from streams.kafka.admin import watermarks
from streams.kafka.client import Headers, KeyedProducer, PublishError
from streams.kafka.security import KafkaConnection

logger = logging.getLogger(__name__)

INIT_TIMEOUT = 60.0
"""Seconds `init_transactions` may take: it waits while the broker aborts the transaction a
predecessor on the same data directory left open."""
COMMIT_TIMEOUT = 60.0
TRANSACTION_TIMEOUT = 10.0
"""Seconds the broker lets a transaction stay open beyond the commit interval (Kafka Streams'
default under EOS is 10 s): after a crash on another machine, the old owner's open
transaction blocks `read_committed` readers of the partitions it wrote to for at most this
(plus the broker's abort check interval); a worker frozen longer finds its transaction
aborted."""
STABLE_TIMEOUT = 120.0
"""Seconds `claim` waits for an earlier owner's transaction to finish."""
SETTLE_POLL = 0.5
"""Seconds between two looks at whether an earlier owner's transaction has ended."""
ID_FILE = "transactional-id"

Config = Mapping[str, str | int | float | bool]
_FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
"""Errors of a worker whose generation is over, or whose producer a newer one replaced."""


class FencedError(RuntimeError):
    """This worker's partitions belong to another worker now (or its producer was replaced):
    what was not committed must be dropped, not persisted."""


@dataclass(frozen=True, slots=True)
class Member:
    """This worker's place in the consumer group, as the coordinator knows it."""

    group_id: str
    generation: int
    member_id: str
    instance_id: str | None = None


_GENERATION = struct.Struct("=i")
_MAGIC = b"CGMDv2:"


def group_metadata(member: Member) -> bytes:
    """librdkafka's serialised consumer group metadata (`rd_kafka_consumer_group_metadata_
    write`, format v2: magic, generation in host order, NUL-terminated group and member ids,
    a null flag, the instance id), which `send_offsets_to_transaction` accepts as given."""
    instance = b"\x01" if member.instance_id is None else b"\x00" + member.instance_id.encode()
    return b"".join(
        (
            _MAGIC,
            _GENERATION.pack(member.generation),
            member.group_id.encode() + b"\0",
            member.member_id.encode() + b"\0",
            instance + (b"" if member.instance_id is None else b"\0"),
        )
    )


def transaction_timeout_ms(commit_interval: float) -> int:
    """`transaction.timeout.ms`: a transaction lasts one commit interval and its commit."""
    return int((commit_interval + TRANSACTION_TIMEOUT) * 1000)


def transactional_id(app_id: str, data_dir: Path) -> str:
    """The app id plus this data directory's own id, made on first use."""
    path = data_dir / ID_FILE
    try:
        own = path.read_text().strip()
    except FileNotFoundError:
        own = uuid.uuid4().hex
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(own + "\n")
    return f"{app_id}-{own}"


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


def _fenced_error(error: BaseException) -> KafkaError | None:
    fatal = fatal_cause(error)
    if fatal is not None:
        return fatal
    if isinstance(error, KafkaException) and error.args:
        kafka_error = error.args[0]
        if isinstance(kafka_error, KafkaError) and kafka_error.code() in _FENCED_CODES:
            return kafka_error
    return None


class _FencedAsSuch:
    """Raise a fencing refusal as `FencedError`. A class rather than a `@contextmanager`
    generator: it wraps every output sent, and a generator costs microseconds each time."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        if isinstance(error, (KafkaException, SystemError)):
            fenced = _fenced_error(error)
            if fenced is not None:
                raise FencedError(str(fenced)) from error


_FENCED_AS_SUCH: Final = _FencedAsSuch()


class Transactions:
    """The worker's one transactional producer: a transaction is open from the first `send`
    after a commit to the next `commit`, which puts the consumed offsets into it. Built at the
    first `claim`: nothing connects before the app starts."""

    def __init__(
        self,
        kafka: KafkaConnection,
        config: Callable[[], Config],
        app_id: str,
        data_dir: Path,
        member: Callable[[], Member],
    ) -> None:
        self._kafka = kafka
        self._config = config
        self._app_id = app_id
        self._data_dir = data_dir
        self._member = member
        self._producer: KeyedProducer | None = None
        self._claimed: Member | None = None
        """The membership under which this worker was given the partitions it processes."""
        self._open = False
        self._positions: dict[tuple[str, int], int] = {}
        """The committed offsets of the claimed partitions, as this worker last knew them:
        a commit without new offsets sends them again, so that the group checks it too."""
        self._committed = asyncio.Event()
        """Clear while a commit runs in its thread: librdkafka refuses produce calls then."""
        self._committed.set()
        self._lock = asyncio.Lock()

    @property
    def acknowledged(self) -> dict[tuple[str, int], int]:
        """The highest acknowledged offset per (topic, partition)."""
        return {} if self._producer is None else self._producer.acknowledged

    async def claim(self, topics: Collection[str], changelog: str, partitions: set[int]) -> None:
        """Process `partitions` of the input `topics` from now on, under the group generation
        in effect now; return once no transaction of an earlier owner holds offsets for them
        or is open on their `changelog` partitions.

        Run by recovery before it reads the changelog: what such a transaction wrote is part
        of the partition's history once it commits, and the committed offsets include it; and
        until it ends, `read_committed` readers of the changelog stop before it, below what a
        local state may have been written up to."""
        async with self._lock:
            if self._producer is None:
                self._producer = await asyncio.to_thread(self._start)
            self._claimed = self._member()
            wanted = [KafkaTP(t, p) for t in sorted(topics) for p in sorted(partitions)]
            self._positions = {}
            if wanted:
                committed = await asyncio.to_thread(self._wait_stable, wanted)
                self._positions = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
                await self._wait_settled(changelog, sorted(partitions))
            logger.info("claimed partitions %s as %s", sorted(partitions), self._claimed)

    async def _wait_settled(self, changelog: str, partitions: list[int]) -> None:
        """Wait until no transaction is open on the changelog partitions: the broker aborts
        a dead owner's after `transaction.timeout.ms`."""
        deadline = time.monotonic() + STABLE_TIMEOUT
        while True:
            stable, written = await asyncio.gather(
                asyncio.to_thread(watermarks, self._kafka, changelog, partitions),
                asyncio.to_thread(
                    watermarks, self._kafka, changelog, partitions, "read_uncommitted"
                ),
            )
            open_on = [p for p in partitions if stable[p][1] < written[p][1]]
            if not open_on:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"a transaction stays open on {changelog} partitions {open_on} after "
                    f"{STABLE_TIMEOUT:.0f} s: the broker should have aborted it after "
                    "transaction.timeout.ms; check transaction.max.timeout.ms and the broker"
                )
            logger.info("waiting for an earlier owner's transaction on %s %s", changelog, open_on)
            await asyncio.sleep(SETTLE_POLL)

    def _start(self) -> KeyedProducer:
        config = {
            **self._config(),
            "transactional.id": transactional_id(self._app_id, self._data_dir),
        }
        producer = KeyedProducer(self._kafka, config)
        try:
            producer.native.init_transactions(INIT_TIMEOUT)
        except KafkaException as error:
            raise RuntimeError(
                f"cannot start the transactional producer: {error}. The broker must allow "
                "transactions: a transaction.state.log.replication.factor no larger than "
                "the broker count, and, where ACLs are enforced, Write and Describe on the "
                f"transactional ids {self._app_id}-*"
            ) from error
        return producer

    def _wait_stable(self, partitions: list[KafkaTP]) -> list[KafkaTP]:
        """The committed offsets of `partitions` (negative: none yet). librdkafka asks for
        them with `require_stable` under `read_committed`, and retries while the coordinator
        answers that a transaction with offsets for them is pending."""
        consumer = Consumer(
            self._kafka.librdkafka({"group.id": self._app_id, "isolation.level": "read_committed"})
        )
        try:
            return list(consumer.committed(partitions, timeout=STABLE_TIMEOUT))
        finally:
            consumer.close()

    def _claimed_producer(self) -> tuple[KeyedProducer, Member]:
        if self._producer is None or self._claimed is None:
            raise FencedError("no partitions claimed by this worker")
        return self._producer, self._claimed

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Queue one message in the open transaction, opening one if need be."""
        if not self._committed.is_set():  # a commit runs: wait for it (no coroutine when not)
            await self._committed.wait()
        producer, _ = self._claimed_producer()
        with _FENCED_AS_SUCH:
            if not self._open:
                producer.native.begin_transaction()
                self._open = True
            try:
                await producer.send(topic, key, value, headers, partition)
            except KafkaException as error:
                if error.args and error.args[0].code() == KafkaError._STATE:
                    # The broker aborted the open transaction: it outlived its timeout, which
                    # only a worker frozen that long does; it lost its partitions too.
                    raise FencedError(f"the transaction was aborted under it: {error}") from error
                raise

    async def barrier(self) -> None:
        """Return once everything sent so far is acknowledged; raise if anything was refused."""
        if self._producer is None:
            return
        with _FENCED_AS_SUCH:
            await self._producer.wait_delivered()
        try:
            self._producer.check()
        except PublishError as error:
            if any(e.code() in _FENCED_CODES or e.fatal() for e in error.errors):
                raise FencedError(str(error)) from error
            raise

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit the open transaction with the next offsets to consume: everything sent so
        far and the offsets become visible at once, or none of it does. Nothing to commit
        without a message sent or an offset moved."""
        if not self._open and not offsets:
            return
        await self.barrier()  # the delivery callbacks run here, not beside the commit
        async with self._lock:
            producer, member = self._claimed_producer()
            self._committed.clear()
            # Offsets are what makes the group coordinator check the generation: a commit with
            # none of its own (a persist before partitions are revoked, which a zombie runs as
            # it wakes) sends the last committed ones again, which moves nothing when it is
            # not fenced. Offset 0 stands for "none yet", as `auto.offset.reset=earliest` does.
            fenced_by = offsets or self._positions
            try:
                await asyncio.to_thread(self._commit, producer.native, fenced_by, member)
                self._positions.update(offsets)
            finally:
                self._open = False
                self._committed.set()

    def _commit(
        self, producer: Producer, offsets: Mapping[tuple[str, int], int], member: Member
    ) -> None:
        try:
            if not self._open:
                producer.begin_transaction()
            if offsets:
                positions = [KafkaTP(t, p, o) for (t, p), o in sorted(offsets.items())]
                producer.send_offsets_to_transaction(
                    positions, group_metadata(member), COMMIT_TIMEOUT
                )
            producer.commit_transaction(COMMIT_TIMEOUT)
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            if isinstance(kafka_error, KafkaError) and kafka_error.txn_requires_abort():
                producer.abort_transaction(COMMIT_TIMEOUT)
            fenced = _fenced_error(error)
            if fenced is not None:
                raise FencedError(str(fenced)) from error
            raise

    def close(self) -> None:
        """Never raises: it runs while the worker stops, and an error there would leave the
        consumer's thread running (the process then never exits). A fenced producer cannot
        abort its open transaction and says so; that is expected."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                producer.native.close()
            except KafkaException as error:
                logger.info("closed the transactional producer: %s", error)


def member_of(consumer: Any) -> Member:
    """The membership of Faust's aiokafka consumer (`app.consumer`), read from its group
    coordinator, as Faust's own driver reads the generation."""
    coordinator = consumer._thread._ensure_consumer()._coordinator
    return Member(
        coordinator.group_id,
        coordinator.generation,
        coordinator.member_id,
        coordinator._group_instance_id,
    )


def read_committed(consumer: Any) -> None:
    """Make an aiokafka consumer, before it starts, skip aborted records and transaction
    markers. Faust asks for `read_committed` only under its own `exactly_once` guarantee,
    which the worker does not use: its transactions are this module's, not Faust's, which
    are reported unreliable upstream."""
    consumer._isolation_level = "read_committed"
