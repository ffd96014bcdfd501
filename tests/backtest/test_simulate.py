"""Sample events: exact, ordered, deterministic, valid, and a population that fires every rule."""

from __future__ import annotations

import gzip
import re
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.backtest.simulate import (
    DAY,
    DEFAULT_START,
    SEGMENTS,
    SOURCE,
    Simulation,
    generate,
    write_jsonl,
)
from streams.models.events import CONTACT_UPDATED, TrackingEvent, parse_structured
from streams.models.outcomes import Conversion

END = DEFAULT_START + 90 * DAY
CONTACTS = 2_000
PRICING = "https://example.com/pricing"
ICP_ATTRIBUTES = {
    "region": "Małopolskie",
    "city": "Kraków",
    "source": "form",
    "consent_email": True,
}

History = dict[str, list[TrackingEvent]]


@pytest.fixture(scope="module")
def sample() -> list[TrackingEvent]:
    return list(generate(CONTACTS, 30_000, seed=11))


@pytest.fixture(scope="module")
def histories(sample: list[TrackingEvent]) -> History:
    by_contact: History = defaultdict(list)
    for event in sample:
        by_contact[event.subject].append(event)
    return by_contact


def test_default_start_is_2026_01_01_utc() -> None:
    assert DEFAULT_START == 1_767_225_600.0


def test_the_same_seed_gives_the_same_events() -> None:
    assert list(generate(50, 600, seed=3)) == list(generate(50, 600, seed=3))
    assert list(generate(50, 600, seed=3)) != list(generate(50, 600, seed=4))


@given(
    contacts=st.integers(1, 40),
    events=st.integers(0, 400),
    seed=st.integers(0, 2**32),
    days=st.floats(0.5, 120),
)
def test_exact_count_in_time_order_within_the_period(
    contacts: int, events: int, seed: int, days: float
) -> None:
    start = 1_000_000.0
    generated = list(generate(contacts, events, seed=seed, start=start, days=days))
    assert len(generated) == events
    times = [event.time for event in generated]
    assert times == sorted(times)
    assert all(start <= time <= start + days * DAY for time in times)
    assert len({event.id for event in generated}) == events
    subjects = {event.subject for event in generated}
    assert subjects <= {f"c-{index:06d}" for index in range(contacts)}
    if events >= contacts:
        assert len(subjects) == contacts


def test_event_attributes(sample: list[TrackingEvent]) -> None:
    assert [event.id for event in sample] == [f"11-{number}" for number in range(len(sample))]
    for event in sample:
        assert event.source == SOURCE
        assert re.fullmatch(r"c-\d{6}", event.subject)
        assert round(event.time, 3) == event.time


def test_every_event_round_trips_through_the_structured_decoder(
    sample: list[TrackingEvent],
) -> None:
    for event in sample:
        assert parse_structured(orjson.dumps(event.to_cloudevent())) == event


def test_every_type_and_never_an_erasure(sample: list[TrackingEvent]) -> None:
    assert {event.type for event in sample} == {
        "email.opened",
        "email.clicked",
        "email.replied",
        "page.visited",
        "form.submitted",
        "list.subscribed",
        "list.unsubscribed",
        CONTACT_UPDATED,
    }


def test_data_shapes(sample: list[TrackingEvent]) -> None:
    keys = {
        "email.opened": {"campaign"},
        "email.clicked": {"url", "campaign"},
        "email.replied": {"campaign"},
        "page.visited": {"url"},
        "form.submitted": {"form"},
        "list.subscribed": {"list"},
        "list.unsubscribed": {"list"},
        CONTACT_UPDATED: {"attributes"},
    }
    for event in sample:
        assert set(event.data) == keys[event.type]
        if "url" in event.data:
            assert event.data["url"].startswith("https://example.com/")
        if event.type == CONTACT_UPDATED:
            attributes = event.data["attributes"]
            assert set(attributes) == {"job_title", "region", "city", "source", "consent_email"}
            assert isinstance(attributes["consent_email"], bool)


def test_segment_shares_add_up() -> None:
    assert sum(segment.share for segment in SEGMENTS) == pytest.approx(1.0)
    assert [segment.name for segment in SEGMENTS] == [
        "champion",
        "engaged",
        "lurker",
        "cold",
        "churner",
        "newcomer",
    ]


def _activity(history: list[TrackingEvent]) -> list[TrackingEvent]:
    return [event for event in history if event.type != CONTACT_UPDATED]


def _updates(history: list[TrackingEvent]) -> list[TrackingEvent]:
    return [event for event in history if event.type == CONTACT_UPDATED]


def _champion(history: list[TrackingEvent]) -> bool:
    """Many of the hottest signals: replies, pricing visits and clicks."""
    hot = [e for e in history if e.type == "email.replied" or e.data.get("url") == PRICING]
    return len(hot) >= 8


def _lurker(history: list[TrackingEvent]) -> bool:
    activity = _activity(history)
    return len(activity) >= 3 and all(event.type == "email.opened" for event in activity)


def _silent_over_30_days(history: list[TrackingEvent]) -> bool:
    return history[-1].time < END - 30 * DAY


def _churner(history: list[TrackingEvent]) -> bool:
    return len(history) >= 2 and history[-1].type == "list.unsubscribed"


def _newcomer(history: list[TrackingEvent]) -> bool:
    return history[0].time > DEFAULT_START + 54 * DAY


def _icp(history: list[TrackingEvent]) -> bool:
    updates = _updates(history)
    if not updates:
        return False
    attributes = updates[0].data["attributes"]
    return attributes["job_title"] in {"president", "prezes", "cto"} and all(
        attributes[key] == value for key, value in ICP_ATTRIBUTES.items()
    )


def _changed(history: list[TrackingEvent]) -> bool:
    updates = _updates(history)
    return len(updates) == 2 and updates[0].data != updates[1].data


def _starts_with_attributes(history: list[TrackingEvent]) -> bool:
    return history[0].type == CONTACT_UPDATED


@pytest.mark.parametrize(
    ("pattern", "low", "high"),
    [
        (_champion, 0.03, 0.07),
        (_lurker, 0.15, 0.35),
        (_silent_over_30_days, 0.25, 0.50),
        (_churner, 0.10, 0.16),
        (_newcomer, 0.03, 0.08),
        (_icp, 0.10, 0.17),
        (_changed, 0.05, 0.20),
        (_starts_with_attributes, 0.85, 0.95),
    ],
)
def test_population_mix(
    histories: History, pattern: Callable[[list[TrackingEvent]], bool], low: float, high: float
) -> None:
    assert len(histories) == CONTACTS
    assert low * CONTACTS <= sum(map(pattern, histories.values())) <= high * CONTACTS


def test_attributes_change_at_most_once_and_only_after_the_first_event(
    histories: History,
) -> None:
    for history in histories.values():
        updates = _updates(history)
        assert len(updates) <= 2
        if updates:
            assert history[0] is updates[0]


@pytest.mark.parametrize(
    ("contacts", "events", "days"), [(-1, 10, 90.0), (10, -1, 90.0), (0, 1, 90.0), (10, 10, 0.0)]
)
def test_bad_arguments_fail_at_the_call(contacts: int, events: int, days: float) -> None:
    with pytest.raises(ValueError):
        generate(contacts, events, days=days)


def test_nothing_to_generate() -> None:
    assert list(generate(0, 0)) == []
    assert list(generate(5, 0)) == []


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_write_jsonl_round_trips(tmp_path: Path, name: str) -> None:
    events = list(generate(20, 200, seed=5))
    path = tmp_path / name
    assert write_jsonl(iter(events), path) == 200
    raw = path.read_bytes()
    if name.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    lines = raw.splitlines()
    assert [parse_structured(line) for line in lines] == events


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "events.jsonl.gz", tmp_path / "b" / "events.jsonl.gz"
    for path in (first, second):
        path.parent.mkdir()
        write_jsonl(generate(10, 50), path)
    assert first.read_bytes() == second.read_bytes()


@pytest.fixture(scope="module")
def converted(sample: list[TrackingEvent]) -> dict[str, Conversion]:
    simulation = Simulation(CONTACTS, 30_000, seed=11)
    assert list(simulation.events()) == sample  # the same events with outcomes as without
    return {conversion.contact_id: conversion for conversion in simulation.conversions()}


def test_conversions_are_deterministic_and_need_the_events_first(
    converted: dict[str, Conversion],
) -> None:
    again = Simulation(CONTACTS, 30_000, seed=11)
    with pytest.raises(RuntimeError, match="once every event is out"):
        again.conversions()
    deque(again.events(), maxlen=0)
    assert {c.contact_id: c for c in again.conversions()} == converted
    assert 0.05 < len(converted) / CONTACTS < 0.2  # a plausible base rate
    assert all(c.value is not None and c.value > 0 for c in converted.values())


def test_churners_never_convert_and_buying_signals_raise_the_rate(
    histories: History, converted: dict[str, Conversion]
) -> None:
    churners = {
        contact
        for contact, events in histories.items()
        if events[-1].type == "list.unsubscribed"  # only churners unsubscribe, and last
    }
    assert churners and not churners & converted.keys()
    demo = {
        contact
        for contact, events in histories.items()
        if any(e.data.get("form") == "demo-request" for e in events)
    }

    def rate(contacts: set[str]) -> float:
        return len(contacts & converted.keys()) / len(contacts)

    assert rate(demo) > 3 * rate(set(histories) - demo)


def test_a_converter_buys_after_its_first_event(
    histories: History, converted: dict[str, Conversion]
) -> None:
    for contact, conversion in converted.items():
        assert conversion.converted_at > histories[contact][0].time
