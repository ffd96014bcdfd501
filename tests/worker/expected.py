"""What a worker's output topics should add up to, computed by the backtest's replay."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from streams.backtest.replay import replay
from streams.models.events import TrackingEvent
from streams.models.outputs import CONTACT_FORGOTTEN, SCORE_CHANGED
from streams.models.plan_versions import PlanHistory
from streams.scoring import PlanSet, current_score
from streams.scoring.engine import plans_for

Scores = dict[tuple[str, str], int]


def expected_outcome(
    events: Sequence[TrackingEvent], plans: PlanSet | PlanHistory, until: float | None = None
) -> tuple[Scores, set[str]]:
    """Final score per (contact, plan) and the ids of every alert, from a plain replay (with
    a plan history, each contact's plans are those of its version at the end)."""
    result = replay(events, plans, until)  # type: ignore[arg-type]  # the core takes a history
    scores = {
        (contact_id, plan.name): current_score(plan, state)
        for contact_id, state in result.states.items()
        for plan in (plans_for(state, plans) if isinstance(plans, PlanHistory) else plans)
    }
    return scores, {alert.id for alert in result.alerts}


def scores_from_updates(updates: Iterable[dict[str, Any]], plans: PlanSet) -> Scores:
    """The last score per (contact, plan) announced on score-updates; 0 before any.

    Updates of one contact share a partition, so they arrive in the order they were made;
    an erasure notice puts every plan of its contact back to 0.
    """
    scores: Scores = {}
    for update in updates:
        if update["type"] == SCORE_CHANGED:
            data = update["data"]
            scores[(data["contact_id"], data["plan"])] = data["score"]
        elif update["type"] == CONTACT_FORGOTTEN:
            for plan in plans:
                scores[(update["subject"], plan.name)] = 0
    return scores


def differences(expected: Scores, observed: Scores, limit: int = 10) -> list[str]:
    """Readable mismatches, the first `limit` of them."""
    keys = sorted(expected.keys() | observed.keys())
    wrong = [
        f"{contact}/{plan}: expected {expected.get((contact, plan), 0)}, "
        f"got {observed.get((contact, plan), 0)}"
        for contact, plan in keys
        if expected.get((contact, plan), 0) != observed.get((contact, plan), 0)
    ]
    return wrong[:limit] + ([f"... {len(wrong) - limit} more"] if len(wrong) > limit else [])
