"""Score history: each contact's last N score changes per plan, kept in its stored record.

In the record (`streams.worker.state.store`) because it must be exact across crashes and partition
moves, like the score it explains: the record is what `ContactStates.persist` writes to the
changelog and RocksDB in the commit that makes the state durable, and a key of its own would
double the changelog messages of every commit.

Shaped for the hot path, since most events change a score. An entry is made from the score
update the worker sends anyway (its `data` is already built for the topic), as one small
msgpack value; a ledger is a msgpack map of plan name to those entries, oldest first.
Adding to a ledger read from the store unpacks the map into lists of entry bytes (it never
decodes an entry); it is packed again once per persist, however many events the contact had
in between; entries are decoded only when `GET /contacts/{id}/history` reads them.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

import msgpack

from streams.models.outputs import CONTACT_FORGOTTEN, SCORE_CHANGED, Output
from streams.models.plans import Plan
from streams.models.times import format_time

DEFAULT_SIZE = 20
MAX_SIZE = 1000
"""Entries kept per plan at most: a record is one changelog message, and a thousand entries of
about 120 bytes for each of several plans stays well under Kafka's 1 MiB default."""
FORMAT = 1

Entries = dict[str, tuple[bytes, ...]]
"""Plan name -> encoded entries, oldest first. Tuples, not lists: they cannot be changed in
place, and the garbage collector stops tracking a tuple of bytes, so a cache of thousands of
ledgers adds nothing to its passes."""

_packer = msgpack.Packer(use_bin_type=True)
_EVENT_CAUSE = ("event_id", "event_source", "event_type", "rules")
"""An event's cause (`Cause.to_json`), stored as a list of these values; any other cause (a
timer's, say) is stored as the map it is."""
_EVENT_CAUSE_KEYS = frozenset(_EVENT_CAUSE)


class Ledger:
    """One contact's score history; immutable (`recorded` returns a new ledger), so a state
    being persisted and the next event's state never share a changing one."""

    __slots__ = ("_encoded", "_entries")

    def __init__(self, encoded: bytes = b"", entries: Entries | None = None) -> None:
        self._encoded: bytes | None = encoded if entries is None else None
        self._entries = entries

    def encoded(self) -> bytes:
        """The stored form (empty for an empty ledger, so its record has no history block)."""
        if self._encoded is None:
            entries = self._entries
            self._encoded = _packer.pack([FORMAT, entries]) if entries else b""
        return self._encoded

    def recorded(self, outputs: Sequence[Output], size: int, active: Container[str]) -> Ledger:
        """This ledger with the score changes among `outputs` added, keeping the last `size`
        per plan: an erasure empties it, and plans not `active` are dropped (the core drops
        their state too). `size` 0 empties it: history is off."""
        if size == 0:
            return EMPTY
        entries: Entries | None = None
        for output in outputs:
            if output.kind != "update":
                continue
            if output.type == SCORE_CHANGED:
                if entries is None:
                    entries = {p: kept for p, kept in self._decoded().items() if p in active}
                data = output.data  # built once: the outbox read it to send the update
                plan = data["plan"]
                entries[plan] = (*entries.get(plan, ()), _entry(output, data))[-size:]
            elif output.type == CONTACT_FORGOTTEN:
                entries = {}
        return self if entries is None else Ledger(entries=entries)

    def changes(self, plan: str, size: int) -> list[dict[str, Any]]:
        """The last `size` changes of `plan`, oldest first, as the HTTP API shows them."""
        return [_decode(raw) for raw in self._decoded().get(plan, ())[-size:]]

    def _decoded(self) -> Entries:
        if self._entries is None:
            self._entries = _unpack(self._encoded or b"")
        return self._entries


EMPTY = Ledger()


def _entry(output: Output, data: Mapping[str, Any]) -> bytes:
    """What a change keeps of its score update."""
    cause = data["cause"]
    if cause.keys() == _EVENT_CAUSE_KEYS:  # most causes: their values only (a third smaller)
        cause = [cause[key] for key in _EVENT_CAUSE]
    entry: bytes = _packer.pack(
        [output.cause.time, data["score"], data["previous_score"], data.get("plan_version"), cause]
    )
    return entry


def _decode(raw: bytes) -> dict[str, Any]:
    time, score, previous, version, cause = msgpack.unpackb(raw, raw=False)
    return {
        "time": format_time(time),
        "score": score,
        "previous_score": previous,
        "cause": dict(zip(_EVENT_CAUSE, cause, strict=True)) if isinstance(cause, list) else cause,
        "plan_version": version,
    }


def _unpack(encoded: bytes) -> Entries:
    if not encoded:
        return {}
    version, entries = msgpack.unpackb(encoded, raw=False, use_list=False)
    if version != FORMAT:
        raise ValueError(f"score history format {version} is not supported (expected {FORMAT})")
    unpacked: Entries = entries
    return unpacked


def history_view(
    contact_id: str, ledger: Ledger, plans: Iterable[Plan], size: int, plan: str | None
) -> tuple[int, dict[str, Any]]:
    """`GET /contacts/{id}/history[?plan=P]`: HTTP status and body for a known contact."""
    names = [each.name for each in plans]
    if plan is not None and plan not in names:
        return 404, {"error": "unknown plan", "plan": plan, "plans": names}
    shown = names if plan is None else [plan]
    return 200, {
        "contact_id": contact_id,
        "history_size": size,
        "plans": {name: ledger.changes(name, size) for name in shown},
    }
