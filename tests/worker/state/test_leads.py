"""`lead-scores` records and leads blocks at persist, without Kafka: one record per changed
contact, none for a contact whose published scores did not change, a tombstone at erasure,
and the index moving with the records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any, cast

import jsonschema
from prometheus_client import CollectorRegistry

from streams.kafka.client import Headers
from streams.models.plan_versions import PlanHistory, load_plan_version
from streams.models.schemas import load_schema
from streams.scoring import ContactState, advance, contact_view, load_plans, plans_for, score_event
from streams.scoring.state import copy_state
from streams.worker.plans.live import LivePlans
from streams.worker.runtime.fencing import Transactions
from streams.worker.state.leads import LeadRecords
from streams.worker.state.states import ContactStates, Held
from streams.worker.state.store import ContactStore
from tests.support import T0, event
from tests.worker.harness import EXAMPLE_PLANS

PLANS = load_plans(EXAMPLE_PLANS)
LEADS = "lead-scores"


class _Producers:
    """Takes what `persist` sends, acknowledging each at the next offset of its partition."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes, bytes | None]] = []
        self.acknowledged: dict[tuple[str, int], int] = {}

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int
    ) -> None:
        assert key is not None
        self.sent.append((topic, partition, key, value))
        where = (topic, partition)
        self.acknowledged[where] = self.acknowledged.get(where, -1) + 1

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Everything is acknowledged and committed as it is sent."""

    def leads(self) -> list[tuple[int, str, Any]]:
        taken = [
            (p, k.decode(), None if v is None else json.loads(v))
            for t, p, k, v in self.sent
            if t == LEADS
        ]
        self.sent.clear()
        return taken


async def _no_outputs() -> None:
    """The tests send no outputs."""


def _states(
    store: ContactStore, producers: _Producers, history: PlanHistory | None = None
) -> ContactStates:
    live = LivePlans(history or PlanHistory.single(PLANS), CollectorRegistry(), time.time)
    return ContactStates(
        lambda: store,
        cast(Transactions, producers),
        "changelog",
        live,
        _no_outputs,
        LeadRecords(LEADS, lambda: store),
    )


def _step(state: ContactState | None, kind: str, minute: int, contact: str) -> ContactState:
    """The state after one more event (a copy: the core changes the state it is given)."""
    given = None if state is None else copy_state(state)
    return score_event(given, event(kind, minute * 60, contact=contact), PLANS).state


def test_a_changed_contact_gets_one_record_and_its_index_entries(store: ContactStore) -> None:
    producers = _Producers()
    states = _states(store, producers)
    warm = _step(None, "email.clicked", 0, "warm")
    for minute, kind in enumerate(["email.replied", "page.visited"], start=1):
        warm = _step(warm, kind, minute, "warm")
    states.put(0, "warm", Held(_step(warm, "email.clicked", 3, "warm")))
    states.put(1, "cold", Held(_step(None, "email.opened", 0, "cold")))
    asyncio.run(states.persist())

    sent = {contact: (partition, value) for partition, contact, value in producers.leads()}
    assert set(sent) == {"warm", "cold"}
    partition, value = sent["warm"]
    assert partition == 0
    jsonschema.validate(value, load_schema("lead-scores"))
    assert value["plans"]["lead-score"] == {
        "score": 70,
        "thresholds": [],
        "plan_version": PLANS.version,
    }
    assert value["changed_at"] == "2026-01-01T00:03:00Z"
    assert value["last_activity"] == "2026-01-01T00:03:00Z"
    assert "attributes" not in value
    leads = store.leads(0, "lead-score", None, None, 10)
    assert [(e.contact_id, e.score, e.changed_at) for e in leads] == [("warm", 70, T0 + 180)]
    assert store.score_counts(1, "lead-score") == [(10, 1)]


def test_an_unchanged_contact_is_not_published_again_and_keeps_its_place(
    store: ContactStore,
) -> None:
    producers = _Producers()
    states = _states(store, producers)
    state = _step(None, "email.opened", 0, "c")
    states.put(0, "c", Held(state))
    asyncio.run(states.persist())
    assert len(producers.leads()) == 1

    # An event no rule matches: the scores stay, the last activity moves, so it is published.
    same = _step(state, "webinar.attended", 1, "c")
    states.put(0, "c", Held(same))
    asyncio.run(states.persist())
    (record,) = producers.leads()
    assert record[2]["last_activity"] == "2026-01-01T00:01:00Z"

    states.put(0, "c", Held(same))  # the very same state again
    asyncio.run(states.persist())
    assert producers.leads() == []
    assert [(e.contact_id, e.changed_at) for e in store.leads(0, "lead-score", None, None, 5)] == [
        ("c", T0 + 60)
    ]


def test_an_erased_contact_gets_a_tombstone_once_and_leaves_the_index(
    store: ContactStore,
) -> None:
    producers = _Producers()
    states = _states(store, producers)
    state = _step(None, "email.clicked", 0, "gone")
    states.put(1, "gone", Held(state))
    asyncio.run(states.persist())
    producers.leads()

    erased = _step(state, "contact.erased", 1, "gone")
    states.put(1, "gone", Held(erased))
    asyncio.run(states.persist())
    assert producers.leads() == [(1, "gone", None)]
    assert store.leads(1, "lead-score", None, None, 5) == []
    assert store.score_counts(1, "lead-score") == []

    states.put(1, "gone", Held(_step(erased, "email.clicked", 0, "gone")))  # a replayed event
    asyncio.run(states.persist())
    assert producers.leads() == []


def test_a_forward_plan_switch_updates_the_record_like_any_change(store: ContactStore) -> None:
    first = load_plan_version(EXAMPLE_PLANS)
    second = load_plan_version(EXAMPLE_PLANS.with_name("plans-v2.yaml"))
    assert second.effective_from is not None
    history = PlanHistory((first, second))
    producers = _Producers()
    states = _states(store, producers, history)
    before = second.effective_from - T0 - 3600
    state = None
    for kind in ("email.clicked", "email.replied", "email.clicked"):
        state = score_event(state, event(kind, before, contact="s"), history).state
    assert state is not None
    states.put(0, "s", Held(copy_state(state)))
    asyncio.run(states.persist())
    ((_, _, old),) = producers.leads()
    assert old["plan_version"] == first.label

    switched, _ = advance(state, second.effective_from + 60, history)
    states.put(0, "s", Held(switched))
    asyncio.run(states.persist())
    ((_, _, new),) = producers.leads()
    view = contact_view(switched, plans_for(switched, history))
    assert view is not None
    assert new["plan_version"] == second.label
    assert {
        p: (v["score"], v["thresholds"], v["plan_version"]) for p, v in new["plans"].items()
    } == {p: (v["score"], v["thresholds_reached"], second.label) for p, v in view["plans"].items()}
    assert new["plans"] != old["plans"]  # replied is worth 40 now, and warm starts at 80
