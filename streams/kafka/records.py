"""Records whose header names are not UTF-8 are read, not fatal, with either client.

Kafka's protocol says a header name is a UTF-8 string, but the broker does not check it: a
librdkafka producer in C (`rd_kafka_header_add` takes any bytes), kcat with a name from the
shell, or a hand-built batch can send any bytes. aiokafka's compiled reader decodes names
strictly and raises `UnicodeDecodeError` out of the consumer's fetch, so the worker's fetch
loop died at such a message, and every restart died again at it (found fuzzing for issue 18).

`install()` makes aiokafka's fetcher read batches through `TolerantRecords`: each batch with
the compiled reader as before, and a batch it cannot read again with aiokafka's pure-Python
reader, from the record where it stopped, decoding names with `surrogateescape` (lossless).
The event decoder refuses such a name (`bad-header`), so the message is dead-lettered, never
scored, and its dead letter writes the bytes as `\\xNN` (`dead_letters.sendable_name`).
confluent-kafka (the rebuild for `rescore`, `dlq replay`) has its own trouble with such a name:
`Message.headers()` returns with the `UnicodeDecodeError` still set, and a second call on the
message crashes the process (SIGSEGV); `confluent_headers` reads them safely.

Reading stays compiled for every batch without such a name; what is added is a Python
generator step per record and Python code per batch: no difference within the noise (binary
events with 7 headers, 100,000 records in 200 batches, medians of 7: 7.5 µs a record through
aiokafka's `MemoryRecords`, 7.1 through `TolerantRecords`; a shared machine).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator
from typing import Any, SupportsIndex

from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch, _DefaultRecordBatchPy
from aiokafka.record.memory_records import _MemoryRecordsPy
from confluent_kafka import Message

from streams.kafka.client import Headers

_HEADERS = operator.methodcaller("headers")


class HeaderNameError(ValueError):
    """A message has a header name that is not UTF-8."""


def confluent_headers(message: Message) -> Headers | None:
    """`message.headers()`, or `HeaderNameError` when a name is not UTF-8; call it once per
    message (a second call of `headers()` on such a message crashes the process).

    Through `methodcaller`, not `message.headers()`: confluent-kafka returns a result with the
    error set, and CPython's specialised call of a method (3.11+) does not look, so the error
    surfaced later, anywhere; a call through the C API raises it here, as `SystemError`."""
    try:
        return _HEADERS(message)  # type: ignore[no-any-return]
    except (SystemError, UnicodeDecodeError) as error:
        raise HeaderNameError("a header name is not UTF-8") from error


class _LenientSlice(bytearray):
    """Bytes whose `decode` keeps what is not UTF-8 as surrogates."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytearray.decode(self, encoding, "surrogateescape")


class _LenientBuffer(bytearray):
    """A batch's bytes whose slices are `_LenientSlice`s: aiokafka's Python reader decodes a
    header name as `buffer[start:end].decode("utf-8")`."""

    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        item = super().__getitem__(index)
        return _LenientSlice(item) if isinstance(index, slice) else item


class _LenientBatch(_DefaultRecordBatchPy):  # type: ignore[misc]  # final for typing only
    """aiokafka's Python reader over a `_LenientBuffer`."""

    def __iter__(self) -> _LenientBatch:
        super().__iter__()  # decompresses into a new buffer
        self._buffer = _LenientBuffer(self._buffer)  # type: ignore[has-type]  # untyped base
        return self


class _TolerantBatch:
    """A compiled batch, read again leniently from the record where a name stopped it."""

    def __init__(self, batch: Any, raw: memoryview) -> None:
        self._batch = batch
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        read = 0
        try:
            for record in self._batch:
                yield record
                read += 1
        except (UnicodeDecodeError, CorruptRecordException):
            # Corruption of any other kind raises again in the Python reader.
            yield from itertools.islice(_LenientBatch(self._raw), read, None)


class TolerantRecords(_MemoryRecordsPy):  # type: ignore[misc]
    """aiokafka's `MemoryRecords`, with each data batch of format v2 a `_TolerantBatch`
    (control batches hold no headers, and aiokafka calls `next` on them)."""

    def next_batch(self, *args: Any) -> Any:
        raw = self._next_slice
        batch = super().next_batch(*args)
        if raw is None or not isinstance(batch, DefaultRecordBatch) or batch.is_control_batch:
            return batch
        return _TolerantBatch(batch, raw)


def install() -> None:
    """Make every aiokafka consumer of this process read through `TolerantRecords`."""
    fetcher.MemoryRecords = TolerantRecords
