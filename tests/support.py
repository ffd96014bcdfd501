"""Builders shared by the tests: events at readable times, plans from inline YAML."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from streams.models.events import TrackingEvent
from streams.scoring import (
    ContactState,
    Output,
    PlanSet,
    Step,
    advance,
    apply,
    parse_plans,
    score_event,
)
from streams.scoring.state import Award

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
_ids = itertools.count()


def event(
    kind: str,
    at: float = 0.0,
    data: dict[str, Any] | None = None,
    contact: str = "c-1",
    event_id: str | None = None,
    source: str = "/test",
) -> TrackingEvent:
    """An event `at` seconds after T0 with a fresh id unless one is given."""
    return TrackingEvent(
        id=event_id if event_id is not None else f"e-{next(_ids)}",
        source=source,
        type=kind,
        time=T0 + at,
        subject=contact,
        data=data or {},
    )


def attributes(at: float = 0.0, contact: str = "c-1", **values: Any) -> TrackingEvent:
    return event("contact.updated", at, {"attributes": values}, contact)


def plans_from(text: str) -> PlanSet:
    return parse_plans(yaml.safe_load(text), "test.yaml")


def run(
    plans: PlanSet, events: Iterable[TrackingEvent], state: ContactState | None = None
) -> tuple[ContactState | None, list[Output]]:
    """Apply events in the given order, collecting every output."""
    outputs: list[Output] = []
    for item in events:
        state, emitted = apply(state, item, plans)
        outputs.extend(emitted)
    return state, outputs


def run_until(
    plans: PlanSet, events: Iterable[TrackingEvent], until: float
) -> tuple[ContactState, list[Output]]:
    state, outputs = run(plans, events)
    assert state is not None
    state, later = advance(state, T0 + until, plans)
    return state, outputs + later


def of_type(outputs: Sequence[Output], kind: str) -> list[Output]:
    return [output for output in outputs if output.type == kind]


BOOM = "test.boom"
"""An event type that `failing_score_event` fails on, as a bug in the core would."""


def failing_score_event(
    state: ContactState | None, item: TrackingEvent, plans: PlanSet, lateness: float = 0.0
) -> Step:
    """`score_event`, except that a `BOOM` event half-changes the state and then raises: the
    drivers must leave the contact exactly as it was before such an event."""
    if item.type != BOOM:
        return score_event(state, item, plans, lateness)
    if state is not None:
        state.seen += bytes(8)
        state.last_activity = item.time
        for plan_state in state.plans.values():
            plan_state.awards.append(Award("boom", item.time, 1_000, None))
    raise RuntimeError("simulated bug in the scoring core")
