"""The published schemas describe what the code accepts and emits (contract tests)."""

from __future__ import annotations

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
from streams.models.schemas import load_schema, schema_dir
from streams.scoring import ContactState, apply, load_plans

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"
NAMES = ["plans", "tracking-event", "score-update", "sales-alert"]
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
