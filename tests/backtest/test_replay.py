"""The replay driver: time order, invalid lines, the end time, compressed input."""

from __future__ import annotations

import gzip
import random
from math import inf, nextafter
from pathlib import Path

import orjson
import pytest

from streams.backtest import replay as replay_module
from streams.backtest.parallel import score_rows
from streams.backtest.replay import OutOfOrderError, replay, replay_file
from streams.backtest.simulate import generate
from streams.models.events import MAX_EVENT_BYTES, TrackingEvent, parse_structured
from streams.models.outputs import THRESHOLD_CROSSED, THRESHOLD_DROPPED
from streams.models.plan_versions import (
    PlanHistory,
    PlanVersion,
    load_plan_version,
    parse_plan_version,
)
from streams.models.times import format_time, parse_time
from streams.scoring import (
    ContactState,
    Outcome,
    Plans,
    PlanSet,
    Step,
    current_score,
    encode_state,
    load_plans,
    score_event,
)
from tests.support import BOOM, DAY, event, failing_score_event

PLANS = load_plans(Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml")
LEAD = PLANS.plans[0]
PLANS_VERSION = load_plan_version(
    Path(__file__).resolve().parents[2] / "schemas/examples/plans.yaml"
)


def write(path: Path, lines: list[bytes]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        out.write(b"\n".join(lines) + b"\n")
    return path


def line(item: object) -> bytes:
    return orjson.dumps(item)


def test_replay_requires_time_order() -> None:
    with pytest.raises(OutOfOrderError):
        replay([event("email.opened", 10), event("email.opened", 5)], PLANS)


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_a_file_out_of_order_is_sorted_and_bad_lines_are_reported(
    tmp_path: Path, name: str
) -> None:
    events = [event("email.replied", 30), event("email.opened", 10), event("list.unsubscribed", 20)]
    path = write(
        tmp_path / name,
        [
            line(events[0].to_cloudevent()),
            b"{oops",
            line(events[1].to_cloudevent()),
            b"",
            line({**events[2].to_cloudevent(), "time": "never"}),
            line(events[2].to_cloudevent()),
        ],
    )
    progress: list[tuple[int, int]] = []
    result = replay_file(path, PLANS, progress=lambda done, total: progress.append((done, total)))
    assert current_score(LEAD, result.states["c-1"]) == 30  # the open was reset, the reply kept
    assert [(r.line, r.reason) for r in result.rejected] == [(2, "not-json"), (5, "bad-time")]
    assert result.outcomes[Outcome.APPLIED] == 3
    assert progress[-1][0] == progress[-1][1]


def test_contacts_are_advanced_to_the_end_time(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", [line(event("email.replied", 0).to_cloudevent())])
    assert current_score(LEAD, replay_file(path, PLANS).states["c-1"]) == 30
    later = replay_file(path, PLANS, until=event("x", 31 * DAY).time)
    assert current_score(LEAD, later.states["c-1"]) == 0  # went quiet: reset after 30 days


def test_alerts_are_kept_and_updates_counted() -> None:
    result = replay(
        [
            event("email.replied", 0),
            event("email.clicked", 1, {"url": "/blog"}),
            event("page.visited", 2, {"url": "/pricing"}),
        ],
        PLANS,
    )
    assert [(a.data["threshold"], a.data["score"]) for a in result.alerts] == [("warm", 100)]
    assert result.score_updates == 3


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_the_size_limit_counts_the_event_not_its_line_break(tmp_path: Path, ending: bytes) -> None:
    """The worker's limit, counted the same way: an event of exactly `MAX_EVENT_BYTES`."""
    base = event("email.opened", 0).to_cloudevent()
    padding = MAX_EVENT_BYTES - len(line({**base, "data": {"campaign": ""}}))
    largest = line({**base, "data": {"campaign": "x" * padding}})
    too_large = line({**base, "id": "e-other", "data": {"campaign": "x" * (padding + 1)}})
    assert len(largest) == MAX_EVENT_BYTES
    path = tmp_path / "e.jsonl"
    path.write_bytes(largest + ending + too_large + ending)
    result = replay_file(path, PLANS)
    assert result.outcomes[Outcome.APPLIED] == 1
    assert [(r.line, r.reason) for r in result.rejected] == [(2, "oversized")]


def test_times_the_outputs_cannot_write_are_rejected_lines(tmp_path: Path) -> None:
    base = event("email.opened", 0).to_cloudevent()
    path = write(
        tmp_path / "e.jsonl",
        [
            line({**base, "id": "late", "time": "9999-12-31T23:30:00-01:00"}),
            line({**base, "id": "early", "time": "0001-01-01T00:30:00+01:00"}),
            line(base),
        ],
    )
    result = replay_file(path, PLANS)
    assert [(r.line, r.reason) for r in result.rejected] == [(1, "bad-time"), (2, "bad-time")]
    assert current_score(LEAD, result.states["c-1"]) == 10


@pytest.mark.parametrize("form", ["list", "iterator", "file"])
def test_an_event_the_core_fails_on_is_reported_and_the_contact_kept_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, form: str
) -> None:
    """A list is replayed again with copies after the failure, an iterator with copies from
    the start, a file read again: each gives the same report and states."""
    monkeypatch.setattr(replay_module, "score_event", failing_score_event)
    opened, clicked = event("email.opened", 0), event("email.clicked", 20)
    boom = event(BOOM, 10)
    events = [opened, boom, clicked]
    if form == "file":
        lines = [line(e.to_cloudevent()) for e in events]
        result = replay_file(write(tmp_path / "e.jsonl", [b"{oops", *lines]), PLANS)
        assert [(r.line, r.reason) for r in result.rejected] == [(1, "not-json")]
    else:
        result = replay(events if form == "list" else iter(events), PLANS)
    (failed,) = result.failed
    assert (failed.contact_id, failed.event) == ("c-1", boom)
    assert failed.message.startswith("the scoring core failed: RuntimeError: simulated bug")
    expected = replay([opened, clicked], PLANS)
    assert encode_state(result.states["c-1"]) == encode_state(expected.states["c-1"])
    assert result.outcomes == expected.outcomes


# --- plan histories ----------------------------------------------------------------------------

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "schemas" / "examples"
START = parse_time("2026-02-15T00:00:00Z")  # when plans-v2.yaml takes over


def rescoring(at: float = START) -> PlanVersion:
    """plans-v2.yaml as a `rescore` version taking over `at`."""
    text = (EXAMPLES_DIR / "plans-v2.yaml").read_text(encoding="utf-8")
    text = text.replace("change: forward", "change: rescore")
    text = text.replace("2026-02-15T00:00:00Z", format_time(at))
    return parse_plan_version(text, "v2-rescore.yaml")


def memberships(states: dict[str, ContactState], plans: PlanSet) -> set[tuple[str, str, str]]:
    return {
        (contact_id, plan.name, threshold.name)
        for contact_id, state in states.items()
        if state.first_seen is not None
        for plan in plans
        for threshold in plan.thresholds
        if current_score(plan, state) >= threshold.score
    }


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[TrackingEvent]]:
    events = list(generate(150, 3000, seed=4))
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    return write(path, [line(e.to_cloudevent()) for e in events]), events


def test_a_rescore_gives_the_new_versions_scores_and_alerts_membership_changes(
    simulated: tuple[Path, list[TrackingEvent]],
) -> None:
    path, events = simulated
    old, new = load_plan_version(EXAMPLES_DIR / "plans.yaml"), rescoring()
    result = replay_file(path, PlanHistory((old, new)))
    alone = replay_file(path, new.plans)
    assert score_rows(result.states, new.plans) == score_rows(alone.states, new.plans)
    earlier = [e for e in events if e.time < START]
    before = memberships(replay(earlier, old.plans, nextafter(START, -inf)).states, old.plans)
    after = memberships(replay(earlier, new.plans, START).states, new.plans)
    rescored = [alert for alert in result.alerts if alert.cause.rescore]
    assert {(a.contact_id, a.data["plan"], a.data["threshold"], a.type) for a in rescored} == {
        *((*member, THRESHOLD_CROSSED) for member in after - before),
        *((*member, THRESHOLD_DROPPED) for member in before - after),
    }
    assert rescored and len(rescored) == len(after ^ before)
    assert {a.cause.to_json()["plan_change"] for a in rescored} == {"spring-2"}
    assert {a.cause.time for a in rescored} == {START}


def test_a_rescore_after_the_last_event_happens_at_the_end_if_the_end_reaches_it(
    simulated: tuple[Path, list[TrackingEvent]],
) -> None:
    path, events = simulated
    late = events[-1].time + DAY
    history = PlanHistory((load_plan_version(EXAMPLES_DIR / "plans.yaml"), rescoring(late)))
    reached = replay_file(path, history, until=late)
    assert any(alert.cause.rescore for alert in reached.alerts)
    assert {state.plan_version for state in reached.states.values()} == {"spring-2"}
    short = replay_file(path, history, until=late - 1)
    assert not any(alert.cause.plan_change for alert in short.alerts)


def test_a_rescore_over_a_file_out_of_order_is_the_same(
    simulated: tuple[Path, list[TrackingEvent]], tmp_path: Path
) -> None:
    path, events = simulated
    shuffled = [line(e.to_cloudevent()) for e in events]
    shuffled.append(shuffled.pop(10))
    history = PlanHistory((load_plan_version(EXAMPLES_DIR / "plans.yaml"), rescoring()))
    ordered = replay_file(path, history)
    sorted_first = replay_file(write(tmp_path / "e.jsonl.gz", shuffled), history)
    assert [a.id for a in sorted_first.alerts] == [a.id for a in ordered.alerts]
    assert sorted_first.states == ordered.states


def test_a_rescore_needs_events_that_can_be_read_again() -> None:
    history = PlanHistory((PLANS_VERSION, rescoring()))
    with pytest.raises(ValueError, match="read again"):
        replay(iter([event("email.opened")]), history)


def test_forward_versions_name_themselves_in_the_outputs(
    simulated: tuple[Path, list[TrackingEvent]],
) -> None:
    path, _ = simulated
    forward = load_plan_version(EXAMPLES_DIR / "plans-v2.yaml")
    result = replay_file(path, PlanHistory((PLANS_VERSION, forward)))
    labels = {(a.cause.time >= START, a.data["plan_version"]) for a in result.alerts}
    assert labels == {(False, PLANS_VERSION.label), (True, "spring-2")}
    switched = [a for a in result.alerts if a.cause.plan_change]
    assert switched and {a.cause.time for a in switched} == {START}  # warm moved to 80
    assert {a.data["threshold"] for a in switched} == {"warm"}


# --- time order --------------------------------------------------------------------------------


def _arranged(events: list[TrackingEvent], order: str) -> list[TrackingEvent]:
    """The events in time order, with 0.1% of them (at least 3) moved to the end, or shuffled."""
    rng = random.Random(8)
    if order == "late":
        late = set(rng.sample(range(len(events)), max(3, len(events) // 1000)))
        kept = [item for index, item in enumerate(events) if index not in late]
        return kept + [events[index] for index in sorted(late)]
    if order == "shuffled":
        return rng.sample(events, len(events))
    return list(events)


@pytest.fixture(scope="module")
def hourly() -> list[TrackingEvent]:
    """Simulated events with their times cut to the hour: many equal times, of one contact and
    of several, so that the order of equal times decides outputs and their order."""
    events = []
    for item in generate(150, 4000, seed=6):
        document = {**item.to_cloudevent(), "time": format_time(item.time // 3600 * 3600)}
        events.append(parse_structured(document))
    return events


@pytest.mark.parametrize("order", ["sorted", "late", "shuffled"])
def test_a_file_in_any_order_replays_as_its_lines_sorted_by_time(
    tmp_path: Path, hourly: list[TrackingEvent], order: str
) -> None:
    """The reference is the replay of the file's events stably sorted by time: equal times in
    line order."""
    arranged = _arranged(hourly, order)
    path = write(tmp_path / "e.jsonl.gz", [line(e.to_cloudevent()) for e in arranged])
    result = replay_file(path, PLANS)
    expected = replay(sorted(arranged, key=lambda e: e.time), PLANS)
    assert result.states == expected.states
    assert [a.to_bytes() for a in result.alerts] == [a.to_bytes() for a in expected.alerts]
    assert (result.outcomes, result.score_updates) == (expected.outcomes, expected.score_updates)
    assert result.until == expected.until


def test_equal_times_keep_their_line_order_when_late(tmp_path: Path) -> None:
    """Two contacts cross `warm` at the same time, in lines that come after a later event: the
    alerts come in the order of those lines."""
    early = [
        event(kind, at, data, contact)
        for contact in ("c-1", "c-2")
        for kind, at, data in (("email.replied", 0, None), ("email.clicked", 1, {"url": "/blog"}))
    ]
    later = event("email.opened", 9, contact="c-3")
    crossing = [
        event("page.visited", 2, {"url": "/pricing"}, contact) for contact in ("c-2", "c-1")
    ]
    path = write(
        tmp_path / "e.jsonl", [line(e.to_cloudevent()) for e in [*early, later, *crossing]]
    )
    result = replay_file(path, PLANS)
    assert [(a.contact_id, a.data["threshold"]) for a in result.alerts] == [
        ("c-2", "warm"),
        ("c-1", "warm"),
    ]


def test_a_file_with_late_lines_goes_through_the_core_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hourly: list[TrackingEvent]
) -> None:
    calls: list[TrackingEvent] = []

    def counted(state: ContactState | None, item: TrackingEvent, plans: Plans) -> Step:
        calls.append(item)
        return score_event(state, item, plans)

    monkeypatch.setattr(replay_module, "score_event", counted)
    arranged = _arranged(hourly, "late")
    path = write(tmp_path / "e.jsonl", [line(e.to_cloudevent()) for e in arranged])
    replay_file(path, PLANS)
    assert sorted(calls, key=lambda e: e.time) == calls
    assert len(calls) == len(arranged)
