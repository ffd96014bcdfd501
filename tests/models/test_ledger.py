"""The change of a breakdown between score updates: what explain and the demo show as "why"."""

from __future__ import annotations

from typing import Any

from streams.models.ledger import Ledger, format_cause, format_points, points_changed
from streams.models.outputs import CONTACT_FORGOTTEN, SCORE_CHANGED


def _data(contact: str, plan: str, breakdown: dict[str, int]) -> dict[str, Any]:
    return {"contact_id": contact, "plan": plan, "breakdown": breakdown}


def test_points_changed_keeps_the_rules_that_moved_in_plan_order_then_the_gone_ones() -> None:
    before = {"opened": 90, "pricing": 50, "clicked": 20}
    after = {"opened": 100, "clicked": 25, "replied": 30}
    assert list(points_changed(before, after).items()) == [
        ("opened", 10),
        ("clicked", 5),
        ("replied", 30),
        ("pricing", -50),
    ]
    assert points_changed(after, after) == {}
    assert points_changed({}, {"president": 10}) == {"president": 10}


def test_format_points_and_cause() -> None:
    assert format_points({"opened": 10, "clicked": 5, "went-quiet": -15}) == (
        "opened +10, clicked +5, went-quiet -15"
    )
    assert format_points({}) == "-"
    event = {"event_id": "e-17", "event_source": "/web", "event_type": "email.opened"}
    assert format_cause({**event, "rules": ["opened"]}) == "email.opened e-17"
    assert format_cause({"rules": ["went-quiet", "expired"], "timer": True}) == (
        "timer went-quiet,expired"
    )
    assert format_cause({"plan_change": "v2"}) == "plan v2"
    assert format_cause({"plan_change": "v3", "rescore": True}) == "rescore v3"


def test_ledger_follows_each_contact_and_plan_and_forgets_an_erased_contact() -> None:
    ledger = Ledger()
    assert ledger.record(SCORE_CHANGED, _data("a", "p", {"opened": 10})) == {"opened": 10}
    assert ledger.record(SCORE_CHANGED, _data("a", "q", {"opened": 1})) == {"opened": 1}
    assert ledger.record(SCORE_CHANGED, _data("b", "p", {"opened": 10})) == {"opened": 10}
    assert ledger.record(SCORE_CHANGED, _data("a", "p", {"opened": 20, "clicked": 5})) == {
        "opened": 10,
        "clicked": 5,
    }
    assert ledger.record(SCORE_CHANGED, _data("a", "p", {})) == {"opened": -20, "clicked": -5}
    assert ledger.record(CONTACT_FORGOTTEN, {"contact_id": "b", "erased_at": "x"}) is None
    assert ledger.record(SCORE_CHANGED, _data("b", "p", {"opened": 10})) == {"opened": 10}
    assert ledger.record(SCORE_CHANGED, _data("a", "q", {"opened": 2})) == {"opened": 1}
