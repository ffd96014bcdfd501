"""Late events: with a window (`lateness`), any arrival order ends where the time-ordered
replay ends, for every rule kind and across plan versions; beyond the window the core is
conservative and says so."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.models.events import TrackingEvent
from streams.models.outputs import SCORE_CHANGED, Output
from streams.models.plan_file import parse_plans
from streams.models.plan_versions import PlanHistory, parse_plan_version
from streams.models.times import format_time
from streams.scoring import ContactState, Plans, advance, current_score, score_event
from streams.scoring.engine import plans_for
from streams.scoring.state import WINDOW_LIMIT, decode_state, encode_state
from tests.support import DAY, T0, event, plans_from

HOUR = 3_600.0
LIMITED = plans_from("""
plans:
  - name: p
    rules:
      - {id: open, when: {type: email.opened}, points: 5, limit: {count: 3, per: 1d}}
""")
OPENS = [6 * HOUR + 20 * 60, 10 * HOUR + 36 * 60, 14 * HOUR + 10 * 60, 20 * HOUR + 11 * 60]


def drive(
    plans: Plans,
    events: list[TrackingEvent],
    lateness: float,
    ticks: dict[int, float] | None = None,
) -> tuple[ContactState, list[Output]]:
    """Events in the given order; `ticks[i]` advances the contact to a time before event i."""
    state: ContactState | None = None
    outputs: list[Output] = []
    for index, item in enumerate(events):
        if state is not None and ticks and index in ticks:
            state, fired = advance(state, ticks[index], plans)
            outputs += fired
        step = score_event(state, item, plans, lateness)
        state = step.state
        outputs += step.outputs
    assert state is not None
    return state, outputs


def scores(plans: Plans, state: ContactState) -> dict[str, int]:
    plan_set = plans_for(state, plans) if isinstance(plans, PlanHistory) else plans
    return {plan.name: current_score(plan, state) for plan in plan_set}


def reported(outputs: list[Output]) -> dict[str, int]:
    """The last score each plan's readers were told."""
    last: dict[str, int] = {}
    for output in outputs:
        if output.type == SCORE_CHANGED:
            last[output.data["plan"]] = output.data["score"]
    return last


def told_last(plans: Plans, state: ContactState, outputs: list[Output]) -> dict[str, int]:
    """Per plan, the last score its readers were told, or the starting score if never."""
    plan_set = plans_for(state, plans) if isinstance(plans, PlanHistory) else plans
    told = reported(outputs)
    return {plan.name: told.get(plan.name, plan.clamp(0)) for plan in plan_set}


def opens(order: list[int]) -> list[TrackingEvent]:
    return [event("email.opened", OPENS[i], event_id=f"open-{i}") for i in order]


def test_the_minimal_case_scores_15_in_both_orders() -> None:
    in_time, _ = drive(LIMITED, opens([0, 1, 2, 3]), lateness=DAY)
    late, outputs = drive(LIMITED, opens([0, 1, 3, 2]), lateness=DAY)
    plan = LIMITED.plans[0]
    assert current_score(plan, in_time) == current_score(plan, late) == 15
    assert reported(outputs) == {"p": 15}
    awarded = sorted(award.time - T0 for award in late.plans["p"].awards)
    assert awarded == OPENS[:3]  # the allowance went to the three earliest


def test_a_late_event_displaces_an_award_which_frees_a_refused_one() -> None:
    """count 1 per 1d: in time order -0.5d, 0.6d and 1.8d are awarded (0 and 1.2d refused);
    arriving last, -0.5d must undo 0's award and hand 0.6d's allowance back."""
    plans = plans_from("""
plans:
  - name: p
    rules:
      - {id: open, when: {type: email.opened}, points: 1, limit: {count: 1, per: 1d}}
""")
    times = [0.0, 0.6 * DAY, 1.2 * DAY, 1.8 * DAY, -0.5 * DAY]
    events = [event("email.opened", 2 * DAY + at, event_id=f"o{i}") for i, at in enumerate(times)]
    reference, _ = drive(plans, sorted(events, key=lambda e: e.time), lateness=0.0)
    late, _ = drive(plans, events, lateness=3 * DAY)
    assert sorted(a.time for a in late.plans["p"].awards) == sorted(
        a.time for a in reference.plans["p"].awards
    )
    assert [
        a.time - T0 - 2 * DAY for a in sorted(late.plans["p"].awards, key=lambda a: a.time)
    ] == [
        -0.5 * DAY,
        0.6 * DAY,
        1.8 * DAY,
    ]


def test_beyond_the_window_a_windowed_limit_is_never_exceeded() -> None:
    """Without a window (lateness 0, or an event older than it) the late event may not
    displace anything, so it is refused when any window holding it is full."""
    state, _ = drive(LIMITED, opens([0, 1, 3, 2]), lateness=0.0)
    assert current_score(LIMITED.plans[0], state) == 15


def test_a_penalty_that_fired_before_a_late_earlier_event_is_taken_back() -> None:
    plans = plans_from("""
plans:
  - name: p
    inactivity:
      - {id: quiet, after: 2d, points: -10}
    rules:
      - {id: open, when: {type: email.opened}, points: 5}
""")
    first = event("email.opened", 0.0)
    late = event("email.opened", 1.5 * DAY)  # before the deadline at 2d
    state, _ = drive(plans, [first], lateness=2 * DAY)
    state, fired = advance(state, T0 + 2.5 * DAY, plans)
    assert current_score(plans.plans[0], state) == -5 and fired
    step = score_event(state, late, plans, 2 * DAY)
    assert current_score(plans.plans[0], step.state) == 10  # the quiet period never ended
    assert reported(step.outputs) == {"p": 10}
    assert step.outputs[0].cause.rules == ("open", "quiet")


def test_an_event_older_than_the_window_is_scored_on_its_base() -> None:
    """The state stays the base plus the window: an event too old for the window changes the
    base, and the window's events are replayed on top of it, not lost."""
    plans = plans_from("""
plans:
  - name: p
    rules:
      - {id: open, when: {type: email.opened}, points: 5}
      - {id: click, when: {type: email.clicked}, points: 1}
""")
    events = [
        event("email.opened", 0.0),
        event("email.opened", 5 * DAY),
        event("email.clicked", 5.5 * DAY),
        event("email.clicked", 1 * DAY),  # older than the window (1d behind 5.5d)
        event("email.clicked", 5.2 * DAY),  # inside it: a replay that must keep the one above
    ]
    state, outputs = drive(plans, events, lateness=DAY)
    assert current_score(plans.plans[0], state) == 13
    assert reported(outputs) == {"p": 13}


def test_the_window_is_bounded_and_survives_encoding() -> None:
    events = [event("email.opened", i * 60.0) for i in range(3 * WINDOW_LIMIT)]
    state, _ = drive(LIMITED, events, lateness=DAY)
    assert state.window is not None
    assert len(state.window.events) <= WINDOW_LIMIT
    copy = decode_state(encode_state(state))
    assert copy.window is not None
    assert copy.window.events == state.window.events
    assert copy.window.since == state.window.since
    assert encode_state(copy) == encode_state(state)


def test_events_older_than_the_lateness_leave_the_window() -> None:
    events = [event("email.opened", 0.0), event("email.opened", HOUR), event("email.opened", DAY)]
    state, _ = drive(LIMITED, events, lateness=2 * HOUR)
    assert state.window is not None
    assert [recent[3] - T0 for recent in state.window.events] == [DAY]
    assert state.window.since == T0 + HOUR  # an event at 1d - 2h still finds its base


def test_an_erasure_drops_the_window() -> None:
    """The window holds event data: an erased contact keeps none of it."""
    state, _ = drive(LIMITED, [event("email.opened", 0.0), event("contact.erased", HOUR)], DAY)
    assert state.window is None


# --- the property: every rule kind, random plans, random arrival within the lateness --------


@st.composite
def plan_texts(draw: st.DrawFn, version: str) -> dict[str, Any]:
    """A plan using every rule kind, with drawn points, limits, expiries and periods."""
    points = st.integers(1, 20)
    period = st.sampled_from(["6h", "1d", "2d"])
    quiet = {"id": "quiet", "after": draw(period), "points": -draw(points)}
    if draw(st.booleans()):
        quiet["revert_on_activity"] = True
    plan: dict[str, Any] = {
        "name": "p",
        "thresholds": [{"name": "warm", "score": draw(st.integers(5, 40))}],
        "rules": [
            {
                "id": "opened",
                "when": {"type": "email.opened"},
                "points": draw(points),
                "limit": {"count": draw(st.integers(1, 3)), "per": draw(period)},
            },
            {
                "id": "clicked",
                "when": {"type": "email.clicked"},
                "points": draw(points),
                "limit": {"count": draw(st.integers(1, 2))},
            },
            {
                "id": "pricing",
                "when": {"type": "page.visited", "data": {"url": {"glob": "*pricing*"}}},
                "points": draw(points),
                "expires": draw(period),
            },
            {"id": "replied", "when": {"type": "email.replied"}, "points": draw(points)},
            {"id": "bounced", "when": {"type": "email.bounced"}, "points": -draw(points)},
            {"id": "unsubscribed", "when": {"type": "list.unsubscribed"}, "reset": True},
        ],
        "attributes": [
            {"id": "city", "attribute": "city", "equals": "Kraków", "points": draw(points)}
        ],
        "inactivity": [quiet],
    }
    if draw(st.booleans()):
        gone = {"id": "gone", "of": {"type": "email.replied"}, "after": draw(period), "reset": True}
        plan["inactivity"].append(gone)
    if draw(st.booleans()):
        plan["min"], plan["max"] = -draw(points), draw(st.integers(20, 60))
    return {"version": version, "plans": [plan]}


@st.composite
def scored_plans(draw: st.DrawFn) -> Plans:
    """One plan set, or two versions where the second takes over `forward` mid-history."""
    first = draw(plan_texts("v1"))
    if draw(st.booleans()):
        return parse_plans(first, "test.yaml")
    second = draw(plan_texts("v2"))
    second["effective_from"] = format_time(T0 + draw(st.integers(1, 5)) * DAY)
    return PlanHistory(
        (
            parse_plan_version(yaml.safe_dump(first), "v1.yaml"),
            parse_plan_version(yaml.safe_dump(second), "v2.yaml"),
        )
    )


KINDS = [
    "email.opened",
    "email.clicked",
    "page.visited",
    "email.replied",
    "email.bounced",
    "list.unsubscribed",
    "contact.updated",
]


@st.composite
def history(draw: st.DrawFn) -> list[TrackingEvent]:
    """Events of one contact at distinct minutes over three days, dense enough for limits,
    expiries and quiet periods to overlap (ties make last-writer-wins and equal-time
    allowances a matter of arrival, in any driver)."""
    minutes = draw(
        st.lists(st.integers(0, 3 * 24 * 60), min_size=2, max_size=WINDOW_LIMIT, unique=True)
    )
    times = [minute * 60 for minute in minutes]
    events = []
    for index, at in enumerate(sorted(times)):
        kind = draw(st.sampled_from(KINDS))
        data: dict[str, object] = {}
        if kind == "contact.updated":
            data = {"attributes": {"city": draw(st.sampled_from(["Kraków", "Gdańsk", None]))}}
        elif kind == "page.visited":
            data = {"url": draw(st.sampled_from(["/pricing", "/blog"]))}
        events.append(TrackingEvent(f"e{index}", "/p", kind, T0 + at, "c-1", data))
    return events


@settings(max_examples=300, deadline=None)
@given(plans=scored_plans(), events=history(), data=st.data())
def test_any_arrival_within_the_lateness_ends_where_the_time_ordered_replay_ends(
    plans: Plans, events: list[TrackingEvent], data: st.DataObject
) -> None:
    """Each event arrives at its time plus a delay of up to `lateness`, and timer ticks come in
    between at the arrival time minus `lateness`, as a worker's would: the final scores equal
    the time-ordered replay's, and the last score each reader was told is the final score."""
    lateness = data.draw(st.sampled_from([6 * HOUR, DAY, 2 * DAY]))
    delays = [data.draw(st.floats(0, lateness)) for _ in events]
    order = sorted(range(len(events)), key=lambda i: (events[i].time + delays[i], i))
    arriving = [events[i] for i in order]
    ticks: dict[int, float] = {}
    for position in data.draw(st.sets(st.integers(1, len(events)), max_size=4)):
        if position < len(events):
            arrival = events[order[position]].time + delays[order[position]]
            previous = events[order[position - 1]].time
            ticks[position] = max(arrival - lateness, previous)
    reference, _ = drive(plans, events, lateness=0.0)
    streamed, outputs = drive(plans, arriving, lateness, ticks)
    assert streamed.clock is not None
    for end in (streamed.clock, T0 + 12 * DAY):
        reference, _ = advance(reference, end, plans)
        streamed, after = advance(streamed, end, plans)
        outputs += after
        final = scores(plans, streamed)
        assert final == scores(plans, reference)
        assert told_last(plans, streamed, outputs) == final
    assert streamed.attributes == reference.attributes
    assert streamed.last_activity == reference.last_activity
