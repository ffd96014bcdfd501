"""The leads index: its order, its cursor, and that it follows the records it is derived from."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streams.worker.state.lead_index import Block, block_digest, digest, order_suffix, read_suffix
from streams.worker.state.store import (
    ContactStore,
    contact_key,
    pack_record,
    record_history,
    record_leads,
    record_state,
)


def _record(scores: dict[str, int], changed_at: float = 100.0, state: bytes = b"s") -> bytes:
    block = Block(changed_at, digest({"scores": scores}), tuple(scores.items()))
    return pack_record(None, {0: 1}, state, b"", block.pack())


def _ids(store: ContactStore, partition: int, plan: str, min_score: int | None = None) -> list[str]:
    return [e.contact_id for e in store.leads(partition, plan, min_score, None, 1000)]


def test_a_leads_block_sits_between_history_and_state_and_round_trips() -> None:
    block = Block(1_800_000_000.5, digest(None), (("lead-score", 42), ("product", -7)))
    for history in (b"", b"history"):
        record = pack_record(12.5, {0: 7}, b"state", history, block.pack())
        assert record_history(record) == history
        assert record_state(record) == b"state"
        assert record_leads(record) == block.pack()
        assert block_digest(record_leads(record)) == digest(None)
    assert record_leads(pack_record(12.5, {0: 7}, b"state", b"history")) == b""


@pytest.mark.parametrize(
    ("higher", "lower"),
    [
        ((50, 10.0), (49, 20.0)),  # score first
        ((-3, 10.0), (-4, 10.0)),  # negative scores too
        ((50, 20.0), (50, 10.0)),  # then the latest change
        ((0, 1.0), (0, 0.0)),
    ],
)
def test_the_order_is_score_then_latest_change(
    higher: tuple[int, float], lower: tuple[int, float]
) -> None:
    assert order_suffix(*higher) < order_suffix(*lower)
    assert read_suffix(order_suffix(*higher)) == higher


def test_the_index_follows_writes_ties_go_to_the_latest_change_then_the_id(
    store: ContactStore,
) -> None:
    store.write(
        0,
        {
            "b": _record({"lead": 50, "other": 1}, changed_at=100.0),
            "a": _record({"lead": 50}, changed_at=100.0),
            "late": _record({"lead": 50}, changed_at=200.0),
            "low": _record({"lead": -5}),
            "plain": pack_record(None, {0: 1}, b"s"),  # no block: not in the index
        },
    )
    assert _ids(store, 0, "lead") == ["late", "a", "b", "low"]
    assert _ids(store, 0, "lead", min_score=0) == ["late", "a", "b"]
    assert _ids(store, 0, "other") == ["b"]
    assert _ids(store, 0, "le") == []  # a plan name is not a prefix of another's keys
    assert store.score_counts(0, "lead") == [(50, 3), (-5, 1)]

    store.write(0, {"low": _record({"lead": 80}, changed_at=300.0), "b": _record({"lead": 10})})
    assert _ids(store, 0, "lead") == ["low", "late", "a", "b"]
    assert _ids(store, 0, "other") == []
    assert store.score_counts(0, "lead") == [(80, 1), (50, 2), (10, 1)]
    assert store.score_counts(0, "other") == []
    assert _ids(store, 1, "lead") == []


def test_a_cursor_continues_after_the_last_entry_of_a_page(store: ContactStore) -> None:
    store.write(0, {f"c{i:02d}": _record({"lead": i % 4}, changed_at=i) for i in range(20)})
    everything = store.leads(0, "lead", None, None, 100)
    pages, after = [], None
    while True:
        page = store.leads(0, "lead", None, after, 6)
        if not page:
            break
        pages += page
        after = page[-1].position
    assert pages == everything
    assert [(e.score, e.changed_at) for e in everything] == sorted(
        ((i % 4, float(i)) for i in range(20)), reverse=True
    )


def test_recovery_moves_entries_of_a_key_written_several_times(store: ContactStore) -> None:
    store.write(0, {"a": _record({"lead": 5})})
    batch = [
        (0, 7, "a", _record({"lead": 20}, changed_at=110.0)),
        (0, 8, "a", _record({"lead": 30}, changed_at=120.0)),
        (0, 9, "b", _record({"lead": 30}, changed_at=90.0)),
        (0, 10, "b", None),
        (0, 11, "c", _record({"lead": 1})),
    ]
    store.apply_changelog_batch(
        [
            SimpleNamespace(
                message=SimpleNamespace(
                    partition=p, offset=o, key=contact_key(c), value=v, tp=("changelog", p)
                )
            )
            for p, o, c, v in batch
        ],
        None,
        None,
    )  # type: ignore[arg-type]
    assert [(e.contact_id, e.score) for e in store.leads(0, "lead", None, None, 10)] == [
        ("a", 30),
        ("c", 1),
    ]
    assert store.score_counts(0, "lead") == [(30, 1), (1, 1)]
