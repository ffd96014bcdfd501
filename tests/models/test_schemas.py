"""The published schemas describe what the code accepts and emits (contract tests)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource

from streams.backtest.simulate import generate
from streams.models.events import TrackingEvent
from streams.models.outputs import (
    CONTACT_FORGOTTEN,
    SCORE_CHANGED,
    THRESHOLD_CROSSED,
    THRESHOLD_DROPPED,
)
from streams.models.plan_versions import Change, PlanHistory, load_plan_version
from streams.models.schemas import load_schema, schema_dir
from streams.scoring import ContactState, apply, load_plans
from streams.scoring.engine import plans_for, rescore

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"
NAMES = ["plans", "tracking-event", "score-update", "sales-alert", "lead-scores"]
ERASURE = [TrackingEvent("erase-1", "/gdpr", "contact.erased", 1_800_000_000.0, "c-000001", {})]


def validator(name: str) -> jsonschema.Draft202012Validator:
    registry: Registry = Registry().with_resources(
        (f"{other}.schema.json", Resource.from_contents(load_schema(other))) for other in NAMES
    )
    return jsonschema.Draft202012Validator(load_schema(name), registry=registry)


@pytest.mark.parametrize("name", NAMES)
def test_schemas_are_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema(name))
    assert (schema_dir() / f"{name}.schema.json").is_file()


def test_simulated_events_match_the_tracking_event_schema() -> None:
    check = validator("tracking-event")
    for event in generate(50, 500, seed=3):
        check.validate(event.to_cloudevent())


def test_every_output_matches_its_published_schema() -> None:
    plans = load_plans(EXAMPLES)
    states: dict[str, ContactState] = {}
    outputs = []
    for event in [*generate(200, 4000, seed=5), *ERASURE]:
        states[event.subject], emitted = apply(states.get(event.subject), event, plans)
        outputs.extend(emitted)
    assert {o.type for o in outputs} == {
        THRESHOLD_CROSSED,
        THRESHOLD_DROPPED,
        SCORE_CHANGED,
        CONTACT_FORGOTTEN,
    }
    schemas = {"alert": validator("sales-alert"), "update": validator("score-update")}
    for output in outputs:
        schemas[output.kind].validate(dict(output.cloudevent))


def test_outputs_of_plan_changes_match_their_published_schemas() -> None:
    """Forward switches and rescores: `cause` {"plan_change"[, "rescore"]} and `plan_version`."""
    first = load_plan_version(EXAMPLES)
    forward = load_plan_version(EXAMPLES.with_name("plans-v2.yaml"))
    history = PlanHistory((first, forward))
    assert forward.effective_from is not None
    events = list(generate(100, 2000, seed=5))
    states: dict[str, ContactState] = {}
    outputs = []
    for event in events:
        states[event.subject], emitted = apply(states.get(event.subject), event, history)
        outputs.extend(emitted)
    rescore_version = replace(forward, change=Change.RESCORE, label="spring-2-rescore")
    rebuilt: dict[str, ContactState] = {}
    for event in events:
        rebuilt[event.subject] = apply(rebuilt.get(event.subject), event, forward.plans)[0]
    for contact_id, state in states.items():
        old_plans = plans_for(state, history)
        end = events[-1].time
        outputs += rescore(state, old_plans, rebuilt[contact_id], rescore_version, end)[1]
    causes = {tuple(sorted(o.data["cause"])) for o in outputs if "cause" in o.data}
    assert {("plan_change",), ("plan_change", "rescore")} <= causes
    schemas = {"alert": validator("sales-alert"), "update": validator("score-update")}
    for output in outputs:
        schemas[output.kind].validate(dict(output.cloudevent))
