"""The timers' switch pass: when a version takes over, every contact still on an older one is
ticked once, whatever its stored deadline says."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest
from faust.types import ProducerT
from prometheus_client import CollectorRegistry

from streams.models.plan_versions import PlanHistory
from streams.scoring import ContactState, encode_state
from streams.worker.flow import switch as plan_switch
from streams.worker.flow.switch import SWITCHED, SwitchPasses
from streams.worker.flow.timers import Timers
from streams.worker.plans.live import LivePlans
from streams.worker.state.states import ContactStates, Persisted
from streams.worker.state.store import ContactStore, pack_record
from tests.worker.plans.test_live import version

NOW = time.time()
FAR = NOW + 10 * 86_400.0


class _Producer:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    async def send(self, topic: str, key: bytes, value: bytes, **options: object) -> None:
        self.keys.append(key)


def _record(label: str | None, deadline: float | None, scored: bool = True) -> bytes:
    state = ContactState("x", first_seen=NOW - 3600 if scored else None, plan_version=label)
    return pack_record(deadline, {0: 1}, encode_state(state))


def _timers(store: ContactStore, live: LivePlans, producer: _Producer) -> Timers:
    states = cast(ContactStates, None)  # the wall clock does not ask for stream time
    return Timers(
        "wall",
        states,
        lambda: store,
        lambda: cast(ProducerT, producer),
        "ticks",
        SwitchPasses(live),
    )


def test_contacts_on_an_older_version_are_ticked_once_when_it_takes_over(
    store: ContactStore,
) -> None:
    live = LivePlans(PlanHistory((version("v1"),)), CollectorRegistry(), time.time)
    store.write(
        0,
        {
            "far": _record("v1", FAR),  # its deadline was computed before v2 existed
            "none": _record("v1", None),
            "due": _record("v1", NOW - 60),  # the deadline index ticks it
            "unknown": _record(None, None),  # scored before plan versions
            "switched": _record("v2", FAR),
            "unscored": _record(None, None, scored=False),
        },
    )
    producer = _Producer()
    timers = _timers(store, live, producer)
    assert asyncio.run(timers.run_pass([0])) == 1  # one version: only the due one
    live.install(version("v2", "2000-01-01T00:00:00Z"))
    producer.keys.clear()
    timers.settled(Persisted({0: ["due"]}))  # its tick changed it: due again

    assert asyncio.run(timers.run_pass([0, 1])) == 4
    assert sorted(producer.keys) == [b"due", b"far", b"none", b"unknown"]
    assert asyncio.run(timers.run_pass([0, 1])) == 0  # in flight, and the pass is made

    timers.forget([0])  # the partition moved and came back: its pass is made again
    assert asyncio.run(timers.run_pass([0])) == 4


def test_a_partition_found_switched_is_not_read_again_after_a_restart(
    store: ContactStore,
) -> None:
    live = LivePlans(PlanHistory((version("v1"),)), CollectorRegistry(), time.time)
    live.install(version("v2", "2000-01-01T00:00:00Z"))
    store.write(0, {"stale": _record("v1", FAR)})
    store.write(1, {"switched": _record("v2", FAR)})
    assert asyncio.run(_timers(store, live, _Producer()).run_pass([0, 1])) == 1
    assert (store.meta(0, SWITCHED), store.meta(1, SWITCHED)) == (None, b"v2")

    store.write(1, {"written-by-hand": _record("v1", FAR)})  # no pass would find it now
    assert asyncio.run(_timers(store, live, _Producer()).run_pass([0, 1])) == 1  # "stale" again


def test_a_version_taking_over_later_waits_for_its_start(store: ContactStore) -> None:
    live = LivePlans(PlanHistory((version("v1"),)), CollectorRegistry(), time.time)
    store.write(0, {"far": _record("v1", FAR)})
    live.install(version("v2", "2999-01-01T00:00:00Z"))
    assert asyncio.run(_timers(store, live, _Producer()).run_pass([0])) == 0


def test_a_partition_is_read_in_slices(
    store: ContactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_switch, "SLICE", 7)
    live = LivePlans(PlanHistory((version("v1"),)), CollectorRegistry(), time.time)
    store.write(1, {f"c{n:03}": _record("v1", None) for n in range(50)})
    live.install(version("v2", "2000-01-01T00:00:00Z"))
    producer = _Producer()
    assert asyncio.run(_timers(store, live, producer).run_pass([1])) == 50
    assert len(set(producer.keys)) == 50
