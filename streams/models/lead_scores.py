"""The record of the `lead-scores` topic: a contact's current scores, for sinks to upsert.

One record per contact (key = contact id), the latest wins under compaction, and an erased
contact's last record is a tombstone (a null value), so compaction and every sink drop it.
It carries scores, thresholds, plan versions and times, never the contact's attributes: the
CRM holds those, and this topic is made to be copied elsewhere.

`changed_at` is the contact's own clock at the change (the event or timer time it was
advanced to), not the wall clock, so a replay of the same events gives the same records.
Schema: `schemas/lead-scores.schema.json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from streams.models.plans import Plan
from streams.models.times import format_time


@dataclass(frozen=True, slots=True)
class PlanScore:
    """A contact's score in one plan and the thresholds it is at or above."""

    plan: str
    score: int
    thresholds: tuple[str, ...]
    plan_version: str


@dataclass(frozen=True, slots=True)
class LeadScores:
    """A contact's current scores in every active plan of the plan set it is scored with."""

    contact_id: str
    plans: tuple[PlanScore, ...]
    plan_version: str | None
    """The label of the plan version the contact was last scored with (None: not yet)."""
    last_activity: float | None

    def content(self) -> dict[str, Any]:
        """What a reader sees, but the time of the change: two records with the same content
        say the same thing, so the worker publishes only when it differs."""
        return {
            "contact_id": self.contact_id,
            "plans": {
                p.plan: {
                    "score": p.score,
                    "thresholds": list(p.thresholds),
                    "plan_version": p.plan_version,
                }
                for p in self.plans
            },
            "plan_version": self.plan_version,
            "last_activity": (
                None if self.last_activity is None else format_time(self.last_activity)
            ),
        }


def record(content: dict[str, Any], changed_at: float) -> dict[str, Any]:
    """The record's value: a `LeadScores.content()` and the time of the change."""
    return {**content, "changed_at": format_time(changed_at)}


def record_value(content: dict[str, Any], changed_at: float) -> bytes:
    """The record's value as UTF-8 JSON (the topic's default format)."""
    return orjson.dumps(record(content, changed_at))


def lead_scores(
    contact_id: str,
    scores: Iterable[tuple[Plan, int]],
    plan_version: str | None,
    last_activity: float | None,
) -> LeadScores:
    """The record of a contact with these (plan, current score) pairs."""
    return LeadScores(
        contact_id,
        tuple(
            PlanScore(
                plan.name,
                score,
                tuple(t.name for t in plan.thresholds if score >= t.score),
                plan.version,
            )
            for plan, score in scores
        ),
        plan_version,
        last_activity,
    )
