"""The Connect JSON envelope of `lead-scores` values: a flat payload whose schema names every
field, so a JDBC sink makes one column per field (checked against a real sink in
tests/kafka/test_connect.py)."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson

from streams.models.connect_envelope import JSON_TEXT, ZONED_TIMESTAMP, connect_json, envelope
from streams.models.lead_scores import LeadScores, PlanScore, record
from streams.models.schemas import load_schema
from streams.models.times import parse_time

RECORD = LeadScores(
    "c-1",
    (
        PlanScore("lead-score", 120, ("warm",), "v2"),
        PlanScore("Fit Plan", -10, (), "v2"),
    ),
    "v2",
    parse_time("2026-12-01T10:00:00Z"),
)
CHANGED_AT = parse_time("2026-12-01T10:00:01.250Z")


def _types(schema: dict[str, Any]) -> dict[str, tuple[str, bool, str | None]]:
    return {f["field"]: (f["type"], f["optional"], f.get("name")) for f in schema["fields"]}


def test_the_payload_is_flat_one_score_and_thresholds_field_per_plan() -> None:
    value = record(RECORD.content(), CHANGED_AT)
    jsonschema.validate(value, load_schema("lead-scores"))
    wrapped = envelope(value)

    assert wrapped["payload"] == {
        "contact_id": "c-1",
        "plan_version": "v2",
        "last_activity": "2026-12-01T10:00:00Z",
        "changed_at": "2026-12-01T10:00:01.250Z",
        "plans": orjson.dumps(value["plans"]).decode(),
        "score_Fit Plan": -10,
        "thresholds_Fit Plan": [],
        "score_lead-score": 120,
        "thresholds_lead-score": ["warm"],
    }
    assert orjson.loads(wrapped["payload"]["plans"]) == value["plans"]


def test_the_schema_names_every_payload_field_and_only_the_key_and_times_are_required() -> None:
    wrapped = envelope(record(RECORD.content(), CHANGED_AT))
    schema = wrapped["schema"]
    assert (schema["type"], schema["optional"]) == ("struct", False)
    assert [f["field"] for f in schema["fields"]] == list(wrapped["payload"])
    assert _types(schema) == {
        "contact_id": ("string", False, None),
        "plan_version": ("string", True, None),
        "last_activity": ("string", True, ZONED_TIMESTAMP),
        "changed_at": ("string", False, ZONED_TIMESTAMP),
        "plans": ("string", False, JSON_TEXT),
        "score_Fit Plan": ("int64", True, None),
        "thresholds_Fit Plan": ("array", True, None),
        "score_lead-score": ("int64", True, None),
        "thresholds_lead-score": ("array", True, None),
    }
    arrays = [f["items"] for f in schema["fields"] if f["type"] == "array"]
    assert arrays == [{"field": "", "type": "string", "optional": False}] * 2


def test_a_contact_not_yet_scored_with_a_version_and_without_activity_has_nulls() -> None:
    unscored = LeadScores("c-2", (), None, None)
    wrapped = envelope(record(unscored.content(), CHANGED_AT))
    assert wrapped["payload"] == {
        "contact_id": "c-2",
        "plan_version": None,
        "last_activity": None,
        "changed_at": "2026-12-01T10:00:01.250Z",
        "plans": "{}",
    }


def test_the_schema_does_not_depend_on_the_order_of_the_plans() -> None:
    reordered = LeadScores("c-1", tuple(reversed(RECORD.plans)), "v2", RECORD.last_activity)
    assert (
        orjson.loads(connect_json(reordered.content(), CHANGED_AT))["schema"]
        == orjson.loads(connect_json(RECORD.content(), CHANGED_AT))["schema"]
    )
    assert orjson.loads(connect_json(RECORD.content(), CHANGED_AT)) == envelope(
        record(RECORD.content(), CHANGED_AT)
    )
