"""Properties over generated histories: arrival order and re-delivery do not change scores."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.models.events import TrackingEvent
from streams.scoring import current_score, encode_state, load_plans, score_event
from tests.support import DAY, T0, plans_from, run

NO_TIME_RULES = plans_from("""
plans:
  - name: p
    thresholds: [{name: warm, score: 40}]
    rules:
      - {id: opened, when: {type: email.opened}, points: 10}
      - {id: clicked, when: {type: email.clicked}, points: 20, limit: {count: 2}}
      - {id: bounced, when: {type: email.bounced}, points: -15}
      - {id: unsubscribed, when: {type: list.unsubscribed}, reset: true}
    attributes:
      - {id: city, attribute: city, equals: Kraków, points: 6}
      - {id: size, attribute: size, gte: 100, points: 4}
""")
EXAMPLES = load_plans(Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml")

KINDS = ["email.opened", "email.clicked", "email.bounced", "list.unsubscribed", "contact.updated"]


@st.composite
def histories(draw: st.DrawFn, kinds: list[str] = KINDS, days: int = 3) -> list[TrackingEvent]:
    """Events of one contact at distinct times (ties would make last-writer-wins arbitrary)."""
    times = draw(st.lists(st.integers(0, days * int(DAY)), min_size=1, max_size=30, unique=True))
    events = []
    for index, at in enumerate(sorted(times)):
        kind = draw(st.sampled_from(kinds))
        data: dict[str, object] = {}
        if kind == "contact.updated":
            data = {
                "attributes": {
                    "city": draw(st.sampled_from(["Kraków", "Gdańsk", None])),
                    "size": draw(st.sampled_from([10, 150, None])),
                }
            }
        elif kind == "page.visited":
            data = {"url": draw(st.sampled_from(["/pricing", "/offer/x", "/blog"]))}
        events.append(TrackingEvent(f"e{index}", "/p", kind, T0 + at, "c-1", data))
    return events


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_arrival_order_does_not_change_the_final_score(data: st.DataObject) -> None:
    history = data.draw(histories())
    shuffled = data.draw(st.permutations(history))
    in_order, _ = run(NO_TIME_RULES, history)
    any_order, _ = run(NO_TIME_RULES, shuffled)
    assert in_order is not None and any_order is not None
    plan = NO_TIME_RULES.plans[0]
    assert current_score(plan, any_order) == current_score(plan, in_order)
    assert any_order.attributes == in_order.attributes


TIMED_KINDS = [*KINDS, "page.visited", "email.replied", "contact.erased"]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_replaying_a_prefix_changes_nothing(data: st.DataObject) -> None:
    history = data.draw(histories(TIMED_KINDS, days=120))
    prefix = history[: data.draw(st.integers(1, len(history)))]
    state, _ = run(EXAMPLES, history)
    assert state is not None
    before = encode_state(state)
    for event in prefix:
        step = score_event(state, event, EXAMPLES)
        assert step.outputs == []
        state = step.state
    assert encode_state(state) == before


@settings(max_examples=100, deadline=None)
@given(history=histories(TIMED_KINDS, days=120))
def test_the_same_history_gives_the_same_outputs(history: list[TrackingEvent]) -> None:
    """Nothing in the core may depend on hash seeds, object ids or the clock."""
    assert [o.cloudevent for o in run(EXAMPLES, history)[1]] == [
        o.cloudevent for o in run(EXAMPLES, list(history))[1]
    ]
