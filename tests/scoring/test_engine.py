"""Scoring semantics through the core's public API: every rule kind and its edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.models.outputs import SCORE_CHANGED, THRESHOLD_CROSSED, THRESHOLD_DROPPED
from streams.models.plan_versions import PlanHistory, parse_plan_version
from streams.scoring import (
    Outcome,
    PlanSet,
    advance,
    apply,
    contact_view,
    current_score,
    load_plans,
    next_deadline,
    score_event,
)
from streams.scoring.engine import rescore
from tests.support import DAY, T0, attributes, event, of_type, plans_from, run, run_until

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"


@pytest.fixture(scope="module")
def examples() -> PlanSet:
    return load_plans(EXAMPLES)


def score(plans: PlanSet, state: object, name: str) -> int:
    plan = plans.get(name)
    assert plan is not None and state is not None
    return current_score(plan, state)  # type: ignore[arg-type]


# --- the worked examples ---------------------------------------------------------------------


def test_lead_score_example_crosses_warm_exactly_once(examples: PlanSet) -> None:
    state, outputs = run(
        examples,
        [
            event("email.opened", 0, {"campaign": "spring"}),
            event("email.clicked", 60, {"url": "https://example.com/blog"}),
            event("email.replied", 120),
            event("page.visited", 180, {"url": "https://example.com/pricing"}),
        ],
    )
    assert score(examples, state, "lead-score") == 110
    alerts = of_type(outputs, THRESHOLD_CROSSED)
    assert [(a.data["plan"], a.data["threshold"]) for a in alerts] == [("lead-score", "warm")]
    alert = alerts[0]
    assert alert.kind == "alert"
    assert alert.data["score"] == 110 and alert.data["previous_score"] == 60
    assert alert.data["threshold_score"] == 100
    assert alert.data["breakdown"] == {"opened": 10, "clicked": 20, "replied": 30, "pricing": 50}
    assert alert.data["cause"]["event_type"] == "page.visited"
    assert alert.data["cause"]["rules"] == ["pricing"]
    assert alert.cloudevent["source"] == "/leadscore/plans/lead-score"
    assert alert.cloudevent["subject"] == "c-1"
    assert alert.cloudevent["time"] == "2026-01-01T00:03:00Z"


def test_icp_fit_worked_example_scores_16_after_a_quiet_month(examples: PlanSet) -> None:
    profile = attributes(
        0,
        job_title="President",
        region="Małopolskie",
        city="Kraków",
        source="form",
        consent_email=True,
    )
    state, outputs = run(examples, [profile])
    assert score(examples, state, "icp-fit") == 26
    assert state is not None
    assert next_deadline(state, examples) == T0 + 30 * DAY
    state, later = advance(state, T0 + 30 * DAY, examples)
    assert score(examples, state, "icp-fit") == 16
    [update] = [o for o in of_type(later, SCORE_CHANGED) if o.data["plan"] == "icp-fit"]
    assert update.data["cause"] == {"rules": ["no-offer-visit"], "timer": True}
    assert update.data["breakdown"] == {
        "president": 10,
        "region": 5,
        "city": 6,
        "via-form": 3,
        "consent": 2,
        "no-offer-visit": -10,
    }
    assert update.cloudevent["time"] == "2026-01-31T00:00:00Z"
    assert of_type(outputs + later, THRESHOLD_DROPPED) == []


# --- behavioural rules and matchers ----------------------------------------------------------

MATCHERS = """
plans:
  - name: p
    rules:
      - {id: literal, when: {type: form.submitted, data: {form: Demo}}, points: 1}
      - {id: in, when: {type: email.opened, data: {campaign: {in: [Spring, summer]}}}, points: 2}
      - {id: glob, when: {type: page.visited, data: {url: {glob: "*/Pricing*"}}}, points: 4}
      - {id: regex, when: {type: page.visited, data: {url: {regex: "/docs/[0-9]+$"}}}, points: 8}
      - {id: range, when: {type: deal.viewed, data: {amount: {gte: 100, lte: 200}}}, points: 16}
      - {id: exists, when: {type: email.clicked, data: {utm.source: {exists: true}}}, points: 32}
      - {id: absent, when: {type: email.clicked, data: {utm.source: {exists: false}}}, points: 64}
      - {id: any-of, when: {type: [list.subscribed, list.unsubscribed]}, points: 128}
"""


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        ("form.submitted", {"form": "DEMO"}, 1),
        ("form.submitted", {"form": "demo-2"}, 0),
        ("email.opened", {"campaign": "SUMMER"}, 2),
        ("email.opened", {}, 0),
        ("page.visited", {"url": "https://x.io/pricing/team"}, 4),
        ("page.visited", {"url": "https://x.io/docs/42"}, 8),
        ("page.visited", {"url": "https://x.io/DOCS/42"}, 0),
        ("deal.viewed", {"amount": 150}, 16),
        ("deal.viewed", {"amount": 250}, 0),
        ("deal.viewed", {"amount": "150"}, 0),
        ("deal.viewed", {"amount": True}, 0),
        ("email.clicked", {"utm": {"source": "news"}}, 32),
        ("email.clicked", {"utm": {"medium": "mail"}}, 64),
        ("list.unsubscribed", {}, 128),
        ("something.else", {"form": "demo"}, 0),
    ],
)
def test_matchers(kind: str, data: dict[str, object], expected: int) -> None:
    plans = plans_from(MATCHERS)
    state, _ = run(plans, [event(kind, 0, data)])
    assert score(plans, state, "p") == expected


def test_one_event_can_match_several_rules_and_each_applies() -> None:
    plans = plans_from("""
plans:
  - name: p
    rules:
      - {id: any-visit, when: {type: page.visited}, points: 1}
      - {id: pricing, when: {type: page.visited, data: {url: {glob: "*pricing*"}}}, points: 10}
""")
    state, outputs = run(plans, [event("page.visited", 0, {"url": "/pricing"})])
    assert score(plans, state, "p") == 11
    assert outputs[0].data["cause"]["rules"] == ["any-visit", "pricing"]


def test_negative_points() -> None:
    plans = plans_from("""
plans:
  - name: p
    rules:
      - {id: clicked, when: {type: email.clicked}, points: 20}
      - {id: careers, when: {type: page.visited, data: {url: {glob: "*/careers*"}}}, points: -15}
""")
    state, _ = run(plans, [event("email.clicked"), event("page.visited", 1, {"url": "/careers"})])
    assert score(plans, state, "p") == 5


LIMITS = """
plans:
  - name: p
    rules:
      - {id: opened, when: {type: email.opened}, points: 10, limit: {count: 2, per: 1d}}
      - {id: webinar, when: {type: form.submitted}, points: 5, limit: {count: 1}}
"""


def test_limit_per_rolling_window_of_event_time() -> None:
    plans = plans_from(LIMITS)
    hour = 3600.0
    state, _ = run(plans, [event("email.opened", i * hour) for i in range(5)])
    assert score(plans, state, "p") == 20
    state, _ = run(plans, [event("email.opened", DAY + 0.5 * hour)], state)
    assert score(plans, state, "p") == 30  # the first award left the window
    state, _ = run(plans, [event("email.opened", DAY + 0.6 * hour)], state)
    assert score(plans, state, "p") == 30  # the second is still in it


def test_limit_without_period_counts_forever() -> None:
    plans = plans_from(LIMITS)
    state, outputs = run(plans, [event("form.submitted", i * DAY) for i in range(4)])
    assert score(plans, state, "p") == 5
    assert len(of_type(outputs, SCORE_CHANGED)) == 1


LIMITED_WITH_RESET = """
plans:
  - name: p
    rules:
      - {id: demo, when: {type: form.submitted}, points: 5, limit: {count: 2}}
      - {id: unsubscribed, when: {type: list.unsubscribed}, reset: true}
"""


def test_a_reset_does_not_give_a_limit_its_allowance_back() -> None:
    plans = plans_from(LIMITED_WITH_RESET)
    state, _ = run(plans, [event("form.submitted", at) for at in (0, 1)])
    assert score(plans, state, "p") == 10
    state, _ = run(plans, [event("list.unsubscribed", 2), event("form.submitted", 3)], state)
    assert score(plans, state, "p") == 0


def test_a_count_limit_goes_to_the_earliest_events_whatever_the_arrival_order() -> None:
    plans = plans_from(LIMITED_WITH_RESET)
    history = [event("form.submitted", at) for at in (1, 3, 4)] + [event("list.unsubscribed", 2)]
    in_order, _ = run(plans, sorted(history, key=lambda e: e.time))
    late, outputs = run(plans, [history[1], history[2], history[0], history[3]])
    assert score(plans, in_order, "p") == score(plans, late, "p") == 5
    assert outputs[-1].data["breakdown"] == {"demo": 5}


EXPIRING = """
plans:
  - name: p
    thresholds: [{name: warm, score: 50}]
    rules:
      - {id: pricing, when: {type: page.visited}, points: 50, expires: 10d}
      - {id: clicked, when: {type: email.clicked}, points: 1}
"""


def test_award_expires_through_the_timer_path() -> None:
    plans = plans_from(EXPIRING)
    state, outputs = run(plans, [event("page.visited", 0), event("email.clicked", DAY)])
    assert state is not None
    assert score(plans, state, "p") == 51
    assert [o.data["threshold"] for o in of_type(outputs, THRESHOLD_CROSSED)] == ["warm"]
    assert next_deadline(state, plans) == T0 + 10 * DAY
    state, nothing = advance(state, T0 + 10 * DAY - 1, plans)
    assert nothing == [] and score(plans, state, "p") == 51
    state, later = advance(state, T0 + 10 * DAY, plans)
    assert score(plans, state, "p") == 1
    [update, dropped] = later
    assert update.data["cause"] == {"rules": ["pricing"], "timer": True}
    assert dropped.type == THRESHOLD_DROPPED and dropped.data["threshold"] == "warm"
    assert next_deadline(state, plans) is None


def test_an_event_applied_after_its_award_would_have_expired_adds_nothing() -> None:
    plans = plans_from(EXPIRING)
    state, _ = run(plans, [event("email.clicked", 20 * DAY), event("page.visited", 5 * DAY)])
    assert score(plans, state, "p") == 1


def test_deadline_between_two_events_fires_at_its_own_time_before_the_next_event() -> None:
    plans = plans_from(EXPIRING)
    state, outputs = run(plans, [event("page.visited", 0), event("email.clicked", 30 * DAY)])
    assert score(plans, state, "p") == 1
    assert [o.data["score"] for o in of_type(outputs, SCORE_CHANGED)] == [50, 0, 1]
    assert of_type(outputs, SCORE_CHANGED)[1].cloudevent["time"] == "2026-01-11T00:00:00Z"


# --- resets and clamps -----------------------------------------------------------------------

RESETS = """
plans:
  - name: p
    rules:
      - {id: clicked, when: {type: email.clicked}, points: 20}
      - {id: unsubscribed, when: {type: list.unsubscribed}, reset: true}
    attributes:
      - {id: ceo, attribute: job_title, equals: ceo, points: 7}
"""


def test_reset_clears_behaviour_but_keeps_attribute_points() -> None:
    plans = plans_from(RESETS)
    state, outputs = run(
        plans,
        [
            attributes(0, job_title="CEO"),
            event("email.clicked", 1),
            event("email.clicked", 2),
            event("list.unsubscribed", 3),
        ],
    )
    assert score(plans, state, "p") == 7
    assert outputs[-1].data["cause"]["rules"] == ["unsubscribed"]
    assert outputs[-1].data["breakdown"] == {"ceo": 7}
    state, _ = run(plans, [event("email.clicked", 4)], state)
    assert score(plans, state, "p") == 27


def test_event_older_than_the_reset_adds_nothing_and_same_instant_survives() -> None:
    plans = plans_from(RESETS)
    state, _ = run(
        plans,
        [event("list.unsubscribed", 10), event("email.clicked", 5), event("email.clicked", 10)],
    )
    assert score(plans, state, "p") == 20


def test_min_and_max_clamp_the_total() -> None:
    plans = plans_from("""
plans:
  - name: p
    min: 0
    max: 50
    rules:
      - {id: clicked, when: {type: email.clicked}, points: 20}
      - {id: bounced, when: {type: email.bounced}, points: -100}
""")
    state, outputs = run(plans, [event("email.clicked", i) for i in range(4)])
    assert score(plans, state, "p") == 50
    assert [o.data["score"] for o in outputs] == [20, 40, 50]
    state, _ = run(plans, [event("email.bounced", 10)], state)
    assert score(plans, state, "p") == 0


# --- thresholds ------------------------------------------------------------------------------

THRESHOLDS = """
plans:
  - name: p
    thresholds: [{name: hot, score: 30}, {name: warm, score: 10}]
    rules:
      - {id: small, when: {type: email.opened}, points: 10}
      - {id: big, when: {type: email.replied}, points: 30}
      - {id: penalty, when: {type: email.bounced}, points: -35}
"""


def test_several_thresholds_crossed_by_one_change_alert_in_order() -> None:
    plans = plans_from(THRESHOLDS)
    _, outputs = run(plans, [event("email.replied")])
    assert [(o.type, o.data["threshold"]) for o in outputs if o.kind == "alert"] == [
        (THRESHOLD_CROSSED, "warm"),
        (THRESHOLD_CROSSED, "hot"),
    ]


def test_dropping_below_alerts_downwards_in_order_and_recrossing_alerts_again() -> None:
    plans = plans_from(THRESHOLDS)
    _, outputs = run(
        plans,
        [
            event("email.replied", 0),
            event("email.opened", 1),  # 40: nothing new crossed
            event("email.bounced", 2),  # 5: drops hot then warm
            event("email.opened", 3),  # 15: crosses warm again
        ],
    )
    alerts = [(o.type, o.data["threshold"], o.data["score"]) for o in outputs if o.kind == "alert"]
    assert alerts == [
        (THRESHOLD_CROSSED, "warm", 30),
        (THRESHOLD_CROSSED, "hot", 30),
        (THRESHOLD_DROPPED, "hot", 5),
        (THRESHOLD_DROPPED, "warm", 5),
        (THRESHOLD_CROSSED, "warm", 15),
    ]
    assert len({o.id for o in outputs}) == len(outputs)


def test_landing_exactly_on_a_threshold_crosses_it() -> None:
    plans = plans_from(THRESHOLDS)
    _, outputs = run(plans, [event("email.opened")])
    assert [o.data["threshold"] for o in outputs if o.kind == "alert"] == ["warm"]


def test_every_score_change_emits_an_update_and_no_change_emits_nothing() -> None:
    plans = plans_from(THRESHOLDS)
    _, outputs = run(plans, [event("email.opened"), event("page.visited", 1)])
    assert [o.data["score"] for o in of_type(outputs, SCORE_CHANGED)] == [10]


# --- attributes ------------------------------------------------------------------------------

FIT = """
plans:
  - name: fit
    attributes:
      - {id: city, attribute: city, equals: Kraków, points: 6}
      - {id: big, attribute: company.size, gte: 100, points: 4}
"""


def test_attribute_points_are_replaced_never_added_twice() -> None:
    plans = plans_from(FIT)
    state, outputs = run(
        plans,
        [
            attributes(0, city="KRAKÓW"),
            attributes(1, city="Kraków"),  # same contribution: no change
            attributes(2, city="Warszawa"),
            attributes(3, city="kraków", company={"size": 250}),
            attributes(4, city=None),
        ],
    )
    assert [o.data["score"] for o in outputs] == [6, 0, 10, 4]
    assert outputs[1].data["cause"]["rules"] == ["city"]
    assert state is not None and state.attributes == {"company": {"size": 250}}


def test_attribute_updates_are_last_writer_wins_by_event_time() -> None:
    plans = plans_from(FIT)
    state, _ = run(plans, [attributes(10, city="Warszawa"), attributes(5, city="Kraków")])
    assert score(plans, state, "fit") == 0
    assert state is not None and state.attributes == {"city": "Warszawa"}


# --- inactivity ------------------------------------------------------------------------------

QUIET = """
plans:
  - name: p
    rules:
      - {id: clicked, when: {type: email.clicked}, points: 20}
    inactivity:
      - {id: no-offer, after: 7d, of: {type: page.visited, data: {url: {glob: "*offer*"}}}, points: -5}
  - name: q
    rules:
      - {id: clicked, when: {type: email.clicked}, points: 20}
    inactivity:
      - {id: back, after: 7d, points: -5, revert_on_activity: true}
      - {id: gone, after: 30d, reset: true}
"""


def test_inactivity_penalty_fires_once_per_quiet_period_and_rearms() -> None:
    plans = plans_from(QUIET)
    state, _ = run_until(plans, [event("email.clicked", 0)], 20 * DAY)
    assert score(plans, state, "p") == 15  # fired once at day 7, not again at 14
    assert next_deadline(state, plans) is not None
    state, _ = run(plans, [event("page.visited", 21 * DAY, {"url": "/offer/a"})], state)
    assert state is not None
    state, _ = advance(state, T0 + 28 * DAY - 1, plans)
    assert score(plans, state, "p") == 15
    state, later = advance(state, T0 + 28 * DAY, plans)
    assert score(plans, state, "p") == 10
    assert [o.data["cause"] for o in later if o.data["plan"] == "p"] == [
        {"rules": ["no-offer"], "timer": True}
    ]


def test_non_matching_events_do_not_rearm() -> None:
    plans = plans_from(QUIET)
    state, _ = run_until(
        plans,
        [event("page.visited", 0, {"url": "/offer"}), event("email.clicked", 6 * DAY)],
        7 * DAY,
    )
    assert score(plans, state, "p") == 15


def test_revert_on_activity_takes_the_penalty_back() -> None:
    plans = plans_from(QUIET)
    state, _ = run_until(plans, [event("email.clicked", 0)], 8 * DAY)
    assert score(plans, state, "q") == 15
    state, outputs = run(plans, [event("page.visited", 9 * DAY)], state)
    assert score(plans, state, "q") == 20
    [update] = [o for o in outputs if o.data["plan"] == "q"]
    assert update.data["cause"]["rules"] == ["back"]


def test_inactivity_reset_clears_behaviour_after_the_quiet_period() -> None:
    plans = plans_from(QUIET)
    state, _ = run_until(plans, [event("email.clicked", 0), event("email.clicked", 1)], 31 * DAY)
    assert score(plans, state, "q") == 0


def test_attribute_updates_are_not_activity_but_start_the_clock() -> None:
    plans = plans_from(QUIET)
    state, _ = run_until(plans, [attributes(0, city="x"), attributes(6 * DAY, city="y")], 7 * DAY)
    assert score(plans, state, "q") == -5
    assert state.last_activity is None


# --- idempotency, order, erasure -------------------------------------------------------------


def test_duplicate_event_changes_nothing(examples: PlanSet) -> None:
    opened = event("email.opened", 0, event_id="same")
    state, first = apply(None, opened, examples)
    again = score_event(state, opened, examples)
    assert again.outcome is Outcome.DUPLICATE and again.outputs == []
    other_source = event("email.opened", 0, event_id="same", source="/elsewhere")
    assert score_event(again.state, other_source, examples).outcome is Outcome.APPLIED
    assert first


def test_output_ids_are_deterministic_and_distinct(examples: PlanSet) -> None:
    history = [
        event("email.replied", 0, event_id="a"),
        event("page.visited", 5, {"url": "/pricing"}, event_id="b"),
        event("email.clicked", 9, event_id="c"),
    ]
    _, first = run(examples, history)
    _, second = run(examples, history)
    assert [o.id for o in first] == [o.id for o in second]
    assert len({o.id for o in first}) == len(first)


def test_out_of_order_arrival_gives_the_same_score(examples: PlanSet) -> None:
    history = [
        event("email.opened", 0),
        event("email.clicked", 10),
        event("list.unsubscribed", 20),
        event("email.replied", 30),
    ]
    in_order, _ = run(examples, history)
    shuffled, _ = run(examples, [history[3], history[2], history[0], history[1]])
    assert score(examples, in_order, "lead-score") == score(examples, shuffled, "lead-score") == 30


def test_erasure_forgets_and_earlier_events_cannot_resurrect(examples: PlanSet) -> None:
    opened = event("email.opened", 0)
    state, _ = run(examples, [opened, attributes(1, city="Kraków")])
    step = score_event(state, event("contact.erased", 2), examples)
    assert [o.type for o in step.outputs] == ["leadscore.contact.erased"]
    assert contact_view(step.state, examples) is None
    assert step.state.attributes == {} and step.state.plans == {}
    assert next_deadline(step.state, examples) is None
    replayed = score_event(step.state, opened, examples)
    assert replayed.outcome is Outcome.IGNORED
    fresh, _ = run(examples, [event("email.replied", 3)], replayed.state)
    assert score(examples, fresh, "lead-score") == 30


def test_inactive_plans_do_not_score() -> None:
    plans = plans_from("""
plans:
  - {name: paused, active: false, rules: [{id: a, when: {type: email.opened}, points: 1}]}
  - {name: running, rules: [{id: a, when: {type: email.opened}, points: 1}]}
""")
    state, outputs = run(plans, [event("email.opened")])
    assert {o.data["plan"] for o in outputs} == {"running"}
    assert state is not None and list(state.plans) == ["running"]


def test_contact_view_shows_scores_reached_thresholds_and_breakdown(examples: PlanSet) -> None:
    state, _ = run(
        examples, [event("email.replied", 0), event("page.visited", 1, {"url": "/pricing"})]
    )
    assert state is not None
    view = contact_view(state, examples)
    assert view == {
        "contact_id": "c-1",
        "plans": {
            "lead-score": {
                "score": 80,
                "thresholds_reached": [],
                "breakdown": {"replied": 30, "pricing": 50},
            },
            "icp-fit": {"score": 0, "thresholds_reached": [], "breakdown": {}},
        },
        "attributes": {},
        "last_activity": "2026-01-01T00:00:01Z",
    }


def test_a_deadline_past_year_9999_fails_in_the_core() -> None:
    """Outputs are built when read, but a time they cannot write still fails inside the
    core, where the drivers catch it (dead letter, failed event), not where it is sent."""
    plans = plans_from("""
plans:
  - name: p
    rules: [{id: visit, when: {type: page.visited}, points: 5, expires: 90d}]
""")
    late = 253_402_300_800.0 - T0 - 30 * DAY  # 30 days before 10000-01-01T00:00:00Z
    state, _ = run(plans, [event("page.visited", late)])
    assert state is not None
    with pytest.raises((ValueError, OverflowError)):
        advance(state, T0 + late + 100 * DAY, plans)


# --- plan versions ---------------------------------------------------------------------------


def test_a_rescore_version_waits_for_the_rebuild_and_rescore_sends_the_differences() -> None:
    """Time alone never takes a contact into a `rescore` version (forward outputs would come
    before the rebuild's): it keeps the old rules, and no deadline asks for a switch, until
    `rescore` replaces its state with the rebuilt one and sends what changed."""
    text = """
change: {change}
effective_from: "2026-01-10T00:00:00Z"
plans:
  - name: engage
    thresholds: [{{name: warm, score: 20}}]
    rules: [{{id: opened, when: {{type: email.opened}}, points: {points}}}]
"""
    v1 = parse_plan_version(text.format(change="forward", points=10), "v1.yaml")
    v2 = parse_plan_version(text.format(change="rescore", points=30), "v2.yaml")
    history = PlanHistory((v1, v2))
    state, _ = apply(None, event("email.opened", 0), history)
    state, outputs = apply(state, event("email.opened", 10 * DAY), history)
    assert state.plan_version == v1.label and score(v1.plans, state, "engage") == 20
    assert [o.cause.plan_change for o in outputs] == [None, None]  # scored by v1, no switch
    assert next_deadline(state, history) is None
    rebuilt, _ = run(v2.plans, [event("email.opened", 0), event("email.opened", 10 * DAY)])
    assert rebuilt is not None
    state, outputs = rescore(state, v1.plans, rebuilt, v2, T0 + 10 * DAY)
    assert state.plan_version == v2.label and score(v2.plans, state, "engage") == 60
    assert [(o.kind, o.data["previous_score"], o.data["score"]) for o in outputs] == [
        ("update", 20, 60)
    ]  # warm was already reached: no alert again
    assert outputs[0].data["cause"] == {"plan_change": v2.label, "rescore": True}
