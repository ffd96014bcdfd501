"""Record batches with header names that are not UTF-8, which no leadscore client can send:
confluent-kafka sends the `repr` of a bytes name, aiokafka's compiled builder takes `str`
only. aiokafka's pure-Python builder writes what a name's `encode` returns."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]


class RawName(str):
    """A header name whose bytes are `raw`. As text it is what a dead letter carries: the
    bytes that are not UTF-8 as `\\xNN` (`streams.worker.flow.dead_letters.sendable_name`)."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("utf-8", "backslashreplace"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def builder(compression: int = 0) -> _DefaultRecordBatchBuilderPy:
    return _DefaultRecordBatchBuilderPy(
        2, compression, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=0, batch_size=1 << 20,
    )  # fmt: skip


def build_batch(records: Sequence[Record], compression: int = 0) -> bytes:
    """One record batch (format v2) of `records`, offsets from 0."""
    batch = builder(compression)
    for offset, (key, value, headers) in enumerate(records):
        assert batch.append(offset, None, key, value, list(headers)) is not None
    return bytes(batch.build())


async def send_batches(
    bootstrap: str, topic: str, batches: Sequence[tuple[int, Sequence[Record]]]
) -> list[int]:
    """Send each `(partition, records)` as one batch; the offset of each batch's first."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        firsts = []
        for partition, records in batches:
            batch = producer.create_batch()
            batch._builder = builder()
            for key, value, headers in records:
                added = batch.append(key=key, value=value, timestamp=None, headers=list(headers))
                assert added is not None
            sent = await (await producer.send_batch(batch, topic, partition=partition))
            firsts.append(int(sent.offset))
        return firsts
    finally:
        await producer.stop()
