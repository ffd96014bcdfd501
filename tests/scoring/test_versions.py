"""Plan versions in the core: what a `forward` switch and a `rescore` do to a contact."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.models.events import TrackingEvent
from streams.models.outputs import (
    SCORE_CHANGED,
    THRESHOLD_CROSSED,
    THRESHOLD_DROPPED,
    Cause,
    Output,
)
from streams.models.plan_versions import PlanHistory, PlanVersion, parse_plan_version
from streams.models.times import format_time
from streams.scoring import ContactState, advance, current_score, next_deadline, score_event
from streams.scoring.engine import plans_for, rescore
from streams.scoring.state import decode_state, encode_state
from tests.support import DAY, T0, attributes, event, of_type

V1 = """
version: v1
plans:
  - name: p
    thresholds: [{name: warm, score: 30}]
    rules:
      - {id: opened, when: {type: email.opened}, points: 10}
      - {id: clicked, when: {type: email.clicked}, points: 20}
    attributes:
      - {id: city, attribute: city, equals: Kraków, points: 5}
    inactivity:
      - {id: quiet, after: 5d, points: -7}
  - name: gone
    rules:
      - {id: any, when: {type: email.opened}, points: 1}
"""
V2 = f"""
version: v2
effective_from: {format_time(T0 + 10 * DAY)}
plans:
  - name: p
    thresholds: [{{name: warm, score: 20}}]
    rules:
      - {{id: opened, when: {{type: email.opened}}, points: 1}}
    attributes:
      - {{id: city, attribute: city, equals: Kraków, points: 50}}
    inactivity:
      - {{id: quiet, after: 5d, points: -3}}
  - name: new
    thresholds: [{{name: fit, score: 3}}]
    attributes:
      - {{id: city-q, attribute: city, equals: Kraków, points: 3}}
"""
START = T0 + 10 * DAY


def version(text: str, effective_from: float | None = None) -> PlanVersion:
    parsed = parse_plan_version(text, "test.yaml")
    return parsed if effective_from is None else parsed.installed_at(effective_from)


def history(*texts: str) -> PlanHistory:
    return PlanHistory(tuple(version(text) for text in texts))


def drive(
    plans: PlanHistory, events: list[TrackingEvent], until: float | None = None
) -> tuple[ContactState, list[Output]]:
    state: ContactState | None = None
    outputs: list[Output] = []
    for item in events:
        step = score_event(state, item, plans)
        state = step.state
        outputs += step.outputs
    assert state is not None
    if until is not None:
        state, later = advance(state, until, plans)
        outputs += later
    return state, outputs


def causes(outputs: list[Output]) -> list[tuple[str, str, float, dict[str, object]]]:
    return [(o.type, o.data.get("plan", ""), o.cause.time, o.cause.to_json()) for o in outputs]


def test_a_forward_switch_keeps_awards_and_reevaluates_attributes() -> None:
    plans = history(V1, V2)
    events = [attributes(0, city="Kraków"), event("email.opened", 8 * DAY)]
    state, before = drive(plans, events)
    assert current_score(plans.versions[0].plans.plans[0], state) == 5 - 7 + 10
    assert {o.data["plan_version"] for o in before} == {"v1"}
    step = score_event(state, event("email.opened", 12 * DAY), plans)
    switched = [o for o in step.outputs if o.cause.plan_change is not None]
    change = {"plan_change": "v2"}
    assert causes(switched) == [
        (SCORE_CHANGED, "p", START, change),
        (THRESHOLD_CROSSED, "p", START, change),
        (SCORE_CHANGED, "new", START, change),
        (THRESHOLD_CROSSED, "new", START, change),
    ]
    update = switched[0].data
    # the awards keep v1's points (+10, -7); the city is worth v2's 50 from the switch on
    assert (update["previous_score"], update["score"]) == (8, 53)
    assert update["breakdown"] == {"opened": 10, "city": 50, "quiet": -7}
    assert update["plan_version"] == "v2"
    assert switched[2].data["previous_score"] == 0 and switched[2].data["score"] == 3
    assert "gone" not in step.state.plans  # a removed plan is forgotten, and says nothing
    assert step.state.plan_version == "v2"
    # the event after the switch is scored by v2 (+1), its inactivity (-3) from the anchor on
    assert [o.data["score"] for o in of_type(step.outputs, SCORE_CHANGED)][-1] == 54
    state, later = advance(step.state, T0 + 20 * DAY, plans)
    assert causes(later) == [
        (SCORE_CHANGED, "p", T0 + 17 * DAY, {"rules": ["quiet"], "timer": True})
    ]
    assert later[0].data["score"] == 51


def later_in_p(outputs: list[Output]) -> list[tuple[float, int, str]]:
    """(time, score, version) of plan p's updates after the first one."""
    updates = [o for o in outputs if o.data["plan"] == "p"][1:]
    return [(o.cause.time, o.data["score"], o.data["plan_version"]) for o in updates]


def test_old_deadlines_before_the_start_fire_under_the_old_rules() -> None:
    plans = history(V1, V2)
    state, outputs = drive(plans, [event("email.opened", 4 * DAY)], T0 + 11 * DAY)
    timers = later_in_p(outputs)
    assert timers == [(T0 + 9 * DAY, 3, "v1")]  # -7 at day 9, and the switch changes no score
    assert state.plan_version == "v2"


def test_a_deadline_exactly_at_the_start_fires_under_the_new_rules() -> None:
    plans = history(V1, V2)
    _, outputs = drive(plans, [event("email.opened", 5 * DAY)], T0 + 11 * DAY)
    timers = later_in_p(outputs)
    assert timers == [(START, 7, "v2")]  # v2's -3 at day 10, not v1's -7


def test_a_moved_threshold_alerts_with_an_unchanged_score() -> None:
    lower = V1.replace("score: 30", "score: 2").replace("version: v1", "version: lower")
    higher = V1.replace("score: 30", "score: 4").replace("version: v1", "version: higher")
    plans = PlanHistory((version(V1), version(lower, START), version(higher, START + DAY)))
    _, outputs = drive(plans, [event("email.opened", DAY)], START + 2 * DAY)
    switched = [o for o in outputs if o.cause.plan_change is not None]
    assert [
        (o.type, o.data["threshold"], o.data["score"], o.data["previous_score"]) for o in switched
    ] == [
        (THRESHOLD_CROSSED, "warm", 3, 3),  # 10 - 7
        (THRESHOLD_DROPPED, "warm", 3, 3),
    ]
    assert of_type(switched, SCORE_CHANGED) == []  # the score did not change: no update


def test_a_late_event_is_scored_by_the_version_the_contact_is_on() -> None:
    plans = history(V1, V2)
    state, _ = drive(plans, [event("email.opened", DAY)], START + DAY)
    assert state.plan_version == "v2"
    step = score_event(state, event("email.opened", 9 * DAY), plans)
    assert [o.data["plan_version"] for o in step.outputs] == ["v2"]
    assert step.outputs[0].data["breakdown"]["opened"] == 10 + 1  # v1's award, then v2's
    assert step.state.plan_version == "v2"


def test_a_version_the_history_does_not_know_switches_when_next_touched() -> None:
    state, _ = drive(history(V1), [attributes(0, city="Kraków"), event("email.opened", DAY)])
    restarted = history(V2.replace("version: v2", "version: other"))  # another file
    assert next_deadline(state, restarted) == state.clock  # due now: the timer switches it
    step = score_event(state, event("email.opened", 2 * DAY), restarted)
    switched = [o for o in step.outputs if o.cause.plan_change is not None]
    # at the event's time; thresholds compared under the new plans (warm 20: 15 -> 60)
    assert causes(switched)[:2] == [
        (SCORE_CHANGED, "p", T0 + 2 * DAY, {"plan_change": "other"}),
        (THRESHOLD_CROSSED, "p", T0 + 2 * DAY, {"plan_change": "other"}),
    ]
    assert switched[0].data["score"] == 10 + 50
    assert step.state.plan_version == "other"
    assert next_deadline(step.state, restarted) == T0 + 7 * DAY


def test_a_contact_switches_through_every_version_it_skipped() -> None:
    v3 = f"""
version: v3
effective_from: {format_time(T0 + 20 * DAY)}
plans:
  - name: p
    min: 5
    rules:
      - {{id: opened, when: {{type: email.opened}}, points: 100}}
"""
    plans = history(V1, V2, v3)
    state, outputs = drive(plans, [event("email.opened", DAY), event("email.opened", 25 * DAY)])
    outputs = [o for o in outputs if o.data["plan"] == "p"]
    assert causes(outputs[1:]) == [
        (SCORE_CHANGED, "p", T0 + 6 * DAY, {"rules": ["quiet"], "timer": True}),  # v1: -7
        (SCORE_CHANGED, "p", T0 + 20 * DAY, {"plan_change": "v3"}),  # clamped to min 5
        (SCORE_CHANGED, "p", T0 + 25 * DAY, outputs[-1].cause.to_json()),
    ]
    assert [o.data["score"] for o in outputs if o.data["plan"] == "p"][1:] == [3, 5, 103]
    assert [o.data["plan_version"] for o in outputs] == ["v1", "v1", "v3", "v3"]
    assert set(state.plans) == {"p"} and state.plan_version == "v3"


def test_a_label_that_comes_back_is_told_apart_by_the_clock() -> None:
    again = V1 + f"effective_from: {format_time(T0 + 20 * DAY)}\n"
    plans = PlanHistory((version(V1), version(V2), version(again)))
    assert plans.versions[0].label == plans.versions[2].label == "v1"
    state, _ = drive(plans, [event("email.opened", DAY)])
    assert plans_for(state, plans) is plans.versions[0].plans
    assert next_deadline(state, plans) == T0 + 6 * DAY
    state = score_event(state, event("email.opened", 15 * DAY), plans).state
    assert plans_for(state, plans) is plans.versions[1].plans
    state = score_event(state, event("email.opened", 25 * DAY), plans).state
    assert plans_for(state, plans) is plans.versions[2].plans
    assert state.plans["p"].awards[-1].points == 10  # v1's points again


def test_a_shortened_quiet_period_ends_at_the_start() -> None:
    long = V1.replace("after: 5d", "after: 30d")
    plans = history(long, V2)  # v2: after 5d, -3
    _, outputs = drive(plans, [event("email.opened", DAY)], START)
    switched = [o for o in outputs if o.cause.plan_change is not None]
    assert [(o.data["previous_score"], o.data["score"]) for o in switched][:1] == [(10, 7)]
    assert switched[0].data["breakdown"] == {"opened": 10, "quiet": -3}


def test_awards_of_a_removed_rule_still_count_and_show_in_the_breakdown() -> None:
    plans = history(V1, V2)
    events = [event("email.clicked", DAY), attributes(2 * DAY, city="Kraków")]
    state, _ = drive(plans, events)
    state, outputs = advance(state, START, plans)
    update = next(o for o in outputs if o.cause.plan_change is not None).data
    assert update["score"] == 20 - 7 + 50  # v1's click and v1's penalty still count
    assert update["breakdown"] == {"city": 50, "quiet": -7, "clicked": 20}
    assert list(update["breakdown"]) == ["city", "quiet", "clicked"]  # plan order, then others
    assert sum(update["breakdown"].values()) == update["score"]


def test_next_deadline_includes_the_next_switch() -> None:
    plans = history(V1.replace("after: 5d", "after: 30d"), V2)
    state, _ = drive(plans, [event("email.opened", DAY)])
    assert next_deadline(state, plans) == START
    state, _ = advance(state, START, plans)
    assert next_deadline(state, plans) is None  # v2's 5d from day 1 ended at the switch


RESCORE_OLD = """
version: old
plans:
  - name: p
    thresholds: [{name: warm, score: 15}, {name: hot, score: 30}]
    rules: [{id: opened, when: {type: email.opened}, points: 10}]
  - name: s
    thresholds: [{name: s-warm, score: 15}]
    rules: [{id: opened, when: {type: email.opened}, points: 10}]
"""


def test_a_rescore_alerts_exactly_the_membership_differences() -> None:
    new = version(
        RESCORE_OLD.replace("version: old", "version: new\nchange: rescore")
        .replace("points: 10}]\n  - name: s", "points: 20}]\n  - name: s")
        .replace("points: 10}]\n", "points: 5}]\n"),
        START,
    )
    old = version(RESCORE_OLD)
    events = [event("email.opened", DAY), event("email.opened", 2 * DAY)]
    state, _ = drive(PlanHistory((old,)), events)
    rebuilt, _ = drive(PlanHistory((new.installed_at(-1e18),)), events)  # new from the start
    result, outputs = rescore(state, old.plans, rebuilt, new, START)
    cause = {"plan_change": "new", "rescore": True}
    assert [
        (o.type, o.data["plan"], o.data.get("threshold"), o.data["previous_score"], o.data["score"])
        for o in outputs
    ] == [
        (SCORE_CHANGED, "p", None, 20, 40),
        (THRESHOLD_CROSSED, "p", "hot", 20, 40),  # not warm again: it stays above it
        (SCORE_CHANGED, "s", None, 20, 10),
        (THRESHOLD_DROPPED, "s", "s-warm", 20, 10),
    ]
    assert {o.cause.time for o in outputs} == {START}
    assert all(o.cause.to_json() == cause for o in outputs)
    assert result.plan_version == "new" and result.clock == START
    # the same rescore again changes nothing: membership and scores already match
    assert rescore(result, new.plans, rebuilt, new, START)[1] == []


def test_a_rescore_of_an_erased_contact_says_nothing() -> None:
    old, new = version(RESCORE_OLD), version(RESCORE_OLD + "change: rescore\n", START)
    events = [event("email.opened", DAY), event("contact.erased", 2 * DAY)]
    state, _ = drive(PlanHistory((old,)), events)
    rebuilt, _ = drive(PlanHistory((new.installed_at(-1e18),)), events)
    result, outputs = rescore(state, old.plans, rebuilt, new, START)
    assert outputs == [] and result.plans == {} and result.first_seen is None


def test_switch_output_ids_are_deterministic_and_distinct() -> None:
    plans = history(V1, V2)
    events = [attributes(0, city="Kraków"), event("email.opened", 8 * DAY)]
    outputs = drive(plans, events, T0 + 30 * DAY)[1]
    again = drive(plans, events, T0 + 30 * DAY)[1]
    assert [o.id for o in outputs] == [o.id for o in again]
    ids = [o.id for o in outputs]
    assert len(set(ids)) == len(ids)
    forward = [o for o in outputs if o.cause.plan_change is not None]
    assert forward and all(o.cause.rescore is False for o in forward)
    redone = [
        Output(
            o.kind,
            o.type,
            o.source,
            o.contact_id,
            Cause(o.cause.time, o.cause.rules, o.cause.event, o.cause.plan_change, rescore=True),
            {},
            o.discriminator,
        )
        for o in forward
    ]
    assert not {o.id for o in redone} & set(ids)  # a rescore at the same time is another output


def test_a_state_before_plan_versions_switches_silently_when_nothing_changes() -> None:
    plans = history(V1)
    state, _ = drive(plans, [event("email.opened", DAY)])
    state.plan_version = None  # as `decode_state` reads a format-1 state
    step = score_event(state, event("email.clicked", 2 * DAY), plans)
    assert [o.cause.plan_change for o in step.outputs] == [None, None]
    assert step.state.plan_version == "v1"


# --- equivalence with a plain replay -----------------------------------------------------------

P1 = """
version: p1
plans:
  - name: lead
    thresholds: [{name: warm, score: 20}, {name: hot, score: 40}]
    rules:
      - {id: opened, when: {type: email.opened}, points: 10, limit: {count: 3, per: 2d}}
      - {id: clicked, when: {type: email.clicked}, points: 20, expires: 4d}
      - {id: unsubscribed, when: {type: list.unsubscribed}, reset: true}
    attributes:
      - {id: city, attribute: city, equals: Kraków, points: 6}
    inactivity:
      - {id: quiet, after: 6d, points: -5, revert_on_activity: true}
  - name: old
    thresholds: [{name: any, score: 10}]
    rules: [{id: replied, when: {type: email.replied}, points: 30}]
"""
P2 = """
version: p2
plans:
  - name: lead
    inactivity: [{id: quiet, after: 3d, reset: true}]
    attributes: [{id: city, attribute: city, equals: Kraków, points: 12}]
    rules:
      - {id: opened, when: {type: email.opened}, points: 5, limit: {count: 1}}
      - {id: replied, when: {type: email.replied}, points: 25, expires: 3d}
    thresholds: [{name: warm, score: 15}, {name: hot, score: 50}]
  - name: fresh
    thresholds: [{name: fit, score: 5}]
    attributes: [{id: city, attribute: city, equals: Kraków, points: 8}]
    inactivity: [{id: idle, after: 2d, points: -1}]
"""
P3 = P1.replace("version: p1", "version: p3").replace("points: -5", "points: -9")
KINDS = ["email.opened", "email.clicked", "email.replied", "list.unsubscribed", "contact.updated"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[PlanHistory, list[TrackingEvent], list[tuple[str, float]]]:
    """A history of three versions, one contact's events in time order, and what a worker
    might do between them: timers (`advance` to a time not after the next event, or to the
    next deadline) and state stores (encode and decode)."""
    span = 30 * int(DAY)
    starts = sorted(draw(st.lists(st.integers(0, span), min_size=2, max_size=2)))
    plans = PlanHistory((version(P1), version(P2, T0 + starts[0]), version(P3, T0 + starts[1])))
    times = sorted(draw(st.lists(st.integers(0, span), min_size=1, max_size=25, unique=True)))
    events = []
    for index, at in enumerate(times):
        kind = draw(st.sampled_from(KINDS))
        data: dict[str, object] = {}
        if kind == "contact.updated":
            data = {"attributes": {"city": draw(st.sampled_from(["Kraków", "Gdańsk", None]))}}
        events.append(TrackingEvent(f"e{index}", "/p", kind, T0 + at, "c-1", data))
    actions: list[tuple[str, float]] = []
    previous = times[0]
    for at in times[1:]:
        for _ in range(draw(st.integers(0, 2))):
            what = draw(st.sampled_from(["advance", "deadline", "store"]))
            actions.append((what, T0 + draw(st.integers(previous, at))))
        actions.append(("event", 0.0))
        previous = at
    return plans, events, actions


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_timers_and_stores_in_between_give_the_plain_replays_result(
    scenario: tuple[PlanHistory, list[TrackingEvent], list[tuple[str, float]]],
) -> None:
    plans, events, actions = scenario
    end = T0 + 40 * DAY
    plain, expected = drive(plans, events, end)
    state: ContactState | None = None
    outputs: list[Output] = []
    pending = iter(events)

    def apply_next() -> ContactState:
        step = score_event(state, next(pending), plans)
        outputs.extend(step.outputs)
        return step.state

    state = apply_next()
    for what, at in actions:
        if what == "event":
            state = apply_next()
        elif what == "store":
            state = decode_state(encode_state(state))
        else:
            due = next_deadline(state, plans) if what == "deadline" else at
            if due is not None and due <= at:
                state, later = advance(state, due, plans)
                outputs.extend(later)
    state, later = advance(state, end, plans)
    outputs.extend(later)
    assert encode_state(state) == encode_state(plain)
    # one `advance` fires a plan's deadlines before the next plan's: only the order across
    # plans may differ, each plan's outputs come in the same order
    assert per_plan(outputs) == per_plan(expected)


def per_plan(outputs: list[Output]) -> list[tuple[str, str, dict[str, object]]]:
    """The outputs in a stable sort by plan (their `source`)."""
    return sorted(((o.source, o.kind, dict(o.cloudevent)) for o in outputs), key=lambda o: o[0])
