"""What one score change did: the points each rule gained or lost, from the score updates.

A score update carries the breakdown *after* the change (each rule's points now), so a
reader of one update sees a rule's total (`opened +100`) where it wants the change's effect
(`opened +10`). The effect is the difference between an update's breakdown and the one of the
contact's update before it in the same plan. `leadscore explain` and the demo both read it
from here, from the outputs the core sent, so what they show is what consumers of
`score-updates` can compute too. The core reports a change only when the score changes, so
points that moved without changing it (an award at a `max` clamp, +10 and -10 at once) show in
the next reported change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.models.outputs import CONTACT_FORGOTTEN


def points_changed(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """`after - before` per rule, leaving out rules that did not change: rules in `after`'s
    order (the plan's), then the rules that no longer contribute."""
    changed = {rule: points - before.get(rule, 0) for rule, points in after.items()}
    changed.update({rule: -points for rule, points in before.items() if rule not in after})
    return {rule: points for rule, points in changed.items() if points}


def format_points(points: Mapping[str, int]) -> str:
    """`opened +10, clicked +5`; `-` when no rule's points changed (a clamp, a plan change)."""
    return ", ".join(f"{rule} {value:+d}" for rule, value in points.items()) or "-"


def format_cause(cause: Mapping[str, Any]) -> str:
    """`email.opened e-17` for an event, `timer went-quiet` for a deadline, `plan v2` (or
    `rescore v2`) for a plan version's switch."""
    if "plan_change" in cause:
        return f"{'rescore' if cause.get('rescore') else 'plan'} {cause['plan_change']}"
    if cause.get("timer"):
        return "timer " + (",".join(cause["rules"]) or "-")
    return f"{cause['event_type']} {cause['event_id']}"


class Ledger:
    """The last breakdown of each (contact, plan), to turn each score update, read in the
    order they were sent for the contact, into the points that change moved."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, dict[str, Mapping[str, int]]] = {}

    def record(self, output_type: str, data: Mapping[str, Any]) -> dict[str, int] | None:
        """The points per rule of a `leadscore.score.changed` update's `data`; None for an
        erasure (`leadscore.contact.erased`), after which the contact starts from nothing."""
        contact_id = data["contact_id"]
        if output_type == CONTACT_FORGOTTEN:
            self._last.pop(contact_id, None)
            return None
        plans = self._last.setdefault(contact_id, {})
        after: Mapping[str, int] = data["breakdown"]
        points = points_changed(plans.get(data["plan"], {}), after)
        plans[data["plan"]] = after
        return points
