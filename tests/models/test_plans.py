"""Plans compiled per event type: the plans and rules that may react, and no others."""

from __future__ import annotations

from pathlib import Path

from streams.backtest.simulate import generate
from streams.models.events import CONTACT_UPDATED, TrackingEvent
from streams.scoring import PlanSet, load_plans
from tests.support import plans_from

EXAMPLES = load_plans(Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml")
MIXED = plans_from("""
plans:
  - name: a
    rules:
      - {id: any, when: {}, points: 1}
      - {id: sync, when: {type: contact.updated}, points: 2}
      - {id: visit, when: {type: [page.visited, email.clicked], data: {url: {glob: "*/x*"}}},
         points: 3}
    inactivity:
      - {id: quiet, after: 1d, of: {type: email.opened}, points: -1}
  - name: b
    attributes:
      - {id: city, attribute: city, equals: Kraków, points: 6}
  - name: paused
    active: false
    rules:
      - {id: any, when: {}, points: 1}
""")


def test_only_plans_with_something_for_a_type_react() -> None:
    def names(plans: PlanSet, kind: str) -> list[tuple[str, list[str], list[str], bool]]:
        return [
            (r.plan.name, [x.id for x in r.rules], [x.id for x in r.inactivity], r.attributes)
            for r in plans.reactions(kind)
        ]

    assert names(EXAMPLES, "email.opened") == [("lead-score", ["opened"], ["went-quiet"], False)]
    assert names(EXAMPLES, "contact.updated") == [("icp-fit", [], [], True)]
    assert names(EXAMPLES, "webinar.attended") == [("lead-score", [], ["went-quiet"], False)]
    assert names(MIXED, "contact.updated") == [("a", ["sync"], [], False), ("b", [], [], True)]
    assert names(MIXED, "email.opened") == [("a", ["any"], ["quiet"], False)]
    assert names(MIXED, "email.clicked") == [("a", ["any", "visit"], [], False)]
    assert names(MIXED, "webinar.attended") == [("a", ["any"], [], False)]


def test_reactions_pick_exactly_the_rules_that_match() -> None:
    """Over simulated events of every type (and one no plan names), the compiled reactions
    with their data conditions give the same rules as matching every rule of every plan."""
    unnamed = TrackingEvent("u", "/t", "webinar.attended", 0.0, "c", {"url": "/x"})
    for plans in (EXAMPLES, MIXED):
        for item in [*generate(50, 1_000, seed=2), unnamed]:
            compiled = {
                r.plan.name: (
                    [rule.id for rule in r.rules if rule.when.matches_data(item)],
                    [rule.id for rule in r.inactivity if rule.of.matches_data(item)],
                    r.attributes,
                )
                for r in plans.reactions(item.type)
            }
            for plan in plans:
                expected = (
                    [rule.id for rule in plan.rules if rule.when.matches(item)],
                    [rule.id for rule in plan.inactivity if rule.of.matches(item)],
                    item.type == CONTACT_UPDATED and bool(plan.attributes),
                )
                assert compiled.get(plan.name, ([], [], False)) == expected
