"""The leads index on disk: a block in each contact record, and the keys derived from it.

A contact record (`streams.worker.state.store`) carries a *leads block*: the contact's score in each
plan it is scored with, the time of its last published change, and a digest of what was last
published to `lead-scores`. The block travels with the record to the changelog, so whoever
recovers a partition recovers it too; the keys below are derived from it in the same
RocksDB batch as the record (like the deadline index), and never sent anywhere:

- `s<plan><score, descending><changed_at, descending><contact id>`, empty values: a
  partition's contacts by (plan, score), highest first, ties to the most recent change, then
  the contact id. `GET /leads` reads a prefix in key order and stops at its minimum score,
  so a page costs its length, not the number of contacts.
- `h<plan><score, descending>`: how many contacts have that score in the plan (a histogram:
  as many keys as distinct scores), for `GET /leads/counts` and the threshold gauges.

A plan's name is length-prefixed in both, so no name is a prefix of another's keys.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson
from rocksdict import Rdict

ENTRY = b"s"
HISTOGRAM = b"h"
_HEAD = struct.Struct(">8s8sB")
"""changed_at (`_time_order`), digest of the published content, number of plans; then per
plan a length byte, the name and the score (`_score_order`): the bytes of the index keys, so
that keeping the index (at every write, and in recovery) slices them out of the block
instead of decoding it."""
_NAME = struct.Struct(">B")
_ORDER = struct.Struct(">Q")
_TIME = struct.Struct(">d")
_COUNT = struct.Struct(">q")
_TOP = (1 << 64) - 1
SUFFIX_SIZE = 2 * _ORDER.size
"""Bytes of an entry key between the plan prefix and the contact id."""
DIGEST_SIZE = 8
MAX_PLANS = 255


def digest(content: dict[str, Any] | None) -> bytes:
    """Identifies what was published (None: a tombstone), so an unchanged contact is not
    published again."""
    encoded = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return blake2b(encoded, digest_size=DIGEST_SIZE).digest()


@dataclass(frozen=True, slots=True)
class Block:
    """A record's leads block, before it is packed (the index reads the packed bytes)."""

    changed_at: float
    digest: bytes
    scores: tuple[tuple[str, int], ...]

    def pack(self) -> bytes:
        if len(self.scores) > MAX_PLANS:
            raise ValueError(f"{len(self.scores)} plans in one leads block: at most {MAX_PLANS}")
        head = _HEAD.pack(_time_order(self.changed_at), self.digest, len(self.scores))
        parts = [head]
        for plan, score in self.scores:
            name = plan.encode()
            parts += [_NAME.pack(len(name)), name, _score_order(score)]
        return b"".join(parts)


def block_digest(raw: bytes) -> bytes:
    """The digest in a packed block, without decoding the rest."""
    return raw[8 : 8 + DIGEST_SIZE]


def index_keys(raw: bytes, contact_id: bytes) -> list[tuple[bytes, bytes]]:
    """(entry key, histogram key) of each plan in a packed block, sliced out of it."""
    time_order, count = raw[:8], raw[16]
    at = _HEAD.size
    keys = []
    for _ in range(count):
        end = at + 1 + raw[at]
        name, score_order = raw[at:end], raw[end : end + 8]
        keys.append(
            (ENTRY + name + score_order + time_order + contact_id, HISTOGRAM + name + score_order)
        )
        at = end + 8
    return keys


def plan_prefix(kind: bytes, plan: str) -> bytes:
    name = plan.encode()
    return kind + _NAME.pack(len(name)) + name


def _score_order(score: int) -> bytes:
    return _ORDER.pack((1 << 63) - 1 - score)


def _time_order(changed_at: float) -> bytes:
    (bits,) = _ORDER.unpack(_TIME.pack(max(changed_at, 0.0)))
    return _ORDER.pack(_TOP - bits)


def order_suffix(score: int, changed_at: float) -> bytes:
    """Sorts by score, highest first, then by `changed_at`, latest first (times are not
    negative: big-endian IEEE doubles of those sort like the numbers, inverted here)."""
    return _score_order(score) + _time_order(changed_at)


def read_suffix(suffix: bytes) -> tuple[int, float]:
    """(score, changed_at) of an `order_suffix`."""
    flipped, inverted = struct.unpack_from(">QQ", suffix)
    (changed_at,) = _TIME.unpack(_ORDER.pack(_TOP - inverted))
    return (1 << 63) - 1 - flipped, changed_at


def histogram_score(key: bytes, prefix: bytes) -> int:
    (flipped,) = _ORDER.unpack_from(key, len(prefix))
    score: int = (1 << 63) - 1 - flipped
    return score


def read_count(raw: bytes | None) -> int:
    return 0 if raw is None else int(_COUNT.unpack(raw)[0])


def pack_count(count: int) -> bytes:
    return _COUNT.pack(count)


@dataclass(frozen=True, slots=True)
class Entry:
    """One contact in one plan: its place in the order (`order_suffix` + contact id), the
    page cursor of a page ending with it."""

    position: bytes
    contact_id: str
    score: int
    changed_at: float


def entries(
    db: Rdict, plan: str, min_score: int | None, after: bytes | None, limit: int
) -> list[Entry]:
    """Up to `limit` entries of `plan` at or above `min_score`, in order, from just after
    position `after` (a cursor)."""
    prefix = plan_prefix(ENTRY, plan)
    iterator = db.iter()
    iterator.seek(prefix if after is None else prefix + after + b"\0")
    found: list[Entry] = []
    while len(found) < limit and iterator.valid():
        key: bytes = iterator.key()
        if not key.startswith(prefix):
            break
        position = key[len(prefix) :]
        score, changed_at = read_suffix(position)
        if min_score is not None and score < min_score:
            break
        found.append(Entry(position, position[SUFFIX_SIZE:].decode(), score, changed_at))
        iterator.next()
    return found


def histogram(db: Rdict, plan: str) -> Iterator[tuple[int, int]]:
    """(score, number of contacts with it) in `plan`, highest score first."""
    prefix = plan_prefix(HISTOGRAM, plan)
    iterator = db.iter()
    iterator.seek(prefix)
    while iterator.valid():
        key: bytes = iterator.key()
        if not key.startswith(prefix):
            return
        count = read_count(iterator.value())
        if count:
            yield histogram_score(key, prefix), count
        iterator.next()


def at_or_above(counts: Sequence[tuple[int, int]], score: int) -> int:
    """Contacts at or above `score` in a histogram."""
    return sum(count for value, count in counts if value >= score)
