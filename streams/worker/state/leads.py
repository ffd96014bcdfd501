"""The `lead-scores` topic's records and the leads blocks of the contact records, at persist.

For every contact a persist makes durable (`streams.worker.state.states`), this computes its current
scores with the plans it is scored with (what `GET /contacts/{id}` shows) and compares them
with what was last published, whose digest is in the leads block of its stored record:

- changed: a new leads block (scores, the contact's clock as `changed_at`, the new digest)
  goes into the record, and the record's `lead-scores` value (or a tombstone for an erased
  contact) into the partition's transaction, beside the changelog record;
- unchanged (an event that moved no score, a tick with nothing due): the old block is kept as
  it is, so neither the index nor the topic moves.

The record, its index entries (derived from the block in the same RocksDB batch) and the
topic's record are therefore one change: a `read_committed` reader of the topic never sees a
score the state does not hold, and `GET /leads`, `GET /contacts/{id}` and the topic move
together, at the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.models.connect_envelope import connect_json
from streams.models.lead_scores import lead_scores, record_value
from streams.models.plan_versions import PlanHistory
from streams.scoring import ContactState, current_score, plans_for
from streams.worker.runtime.fencing import Transactions
from streams.worker.state.lead_index import Block, block_digest, digest
from streams.worker.state.store import ContactStore, record_leads

Key = tuple[int, str]
"""(partition, contact id)."""
_TOMBSTONE = digest(None)
Encode = Callable[[dict[str, Any], float], bytes]
"""A record's content (`LeadScores.content()`) and its `changed_at` to the value's bytes."""
LeadScoresFormat = Literal["json", "connect-json"]
"""How the `lead-scores` values are written (`--lead-scores-format`)."""
LEAD_SCORES_FORMATS: tuple[LeadScoresFormat, ...] = ("json", "connect-json")

ENCODERS: dict[LeadScoresFormat, Encode] = {
    "json": record_value,
    "connect-json": connect_json,
}
"""The encoding of each `--lead-scores-format`."""


@dataclass(slots=True)
class LeadUpdate:
    """What one persist writes for the leads: a block per contact, and the records to send."""

    blocks: dict[Key, bytes] = field(default_factory=dict)
    records: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)
    """(partition, key, value or None for a tombstone) of each changed contact."""


class LeadRecords:
    """Builds and sends the `lead-scores` records of the contacts a persist makes durable."""

    def __init__(
        self,
        topic: str,
        store: Callable[[], ContactStore],
        encode: Encode = record_value,
    ) -> None:
        """`encode`: one of `ENCODERS`, by `--lead-scores-format`."""
        self.topic = topic
        self._store = store
        self._encode = encode

    def update(
        self,
        states: Iterable[tuple[Key, ContactState]],
        history: PlanHistory,
        read: Mapping[Key, bytes | None] | None = None,
    ) -> LeadUpdate:
        """The blocks and records for these states, each against its stored record (from
        `read` when it has the key: the records as the store holds them now)."""
        store = self._store()
        known = read or {}
        update = LeadUpdate()
        for key, state in states:
            partition, contact_id = key
            stored = known[key] if key in known else store.read(partition, contact_id)
            raw = b"" if stored is None else record_leads(stored)
            if state.first_seen is None:  # erased (or never seen): a tombstone
                record, content = None, None
            else:
                plans = plans_for(state, history)
                scores = [(plan, current_score(plan, state)) for plan in plans]
                record = lead_scores(contact_id, scores, state.plan_version, state.last_activity)
                content = record.content()
            published = digest(content)
            if published == (block_digest(raw) if raw else _TOMBSTONE):
                if raw:
                    update.blocks[key] = raw
                continue
            changed_at = state.clock or 0.0
            scored = () if record is None else tuple((s.plan, s.score) for s in record.plans)
            update.blocks[key] = Block(changed_at, published, scored).pack()
            value = None if content is None else self._encode(content, changed_at)
            update.records.append((partition, contact_id.encode(), value))
        return update

    async def send(self, update: LeadUpdate, producer: Transactions) -> None:
        """Into the worker's open transaction, to the same partition of the topic (it is
        co-partitioned with the input, so a contact's records stay on its partition)."""
        for partition, key, value in update.records:
            await producer.send(self.topic, key, value, [], partition)
