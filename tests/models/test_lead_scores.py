"""The lead-scores record: thresholds from the plan, no attributes, the published schema."""

from __future__ import annotations

import jsonschema
import orjson

from streams.models.lead_scores import lead_scores, record_value
from streams.models.schemas import load_schema
from streams.scoring import load_plans
from tests.support import T0
from tests.worker.harness import EXAMPLE_PLANS

PLANS = load_plans(EXAMPLE_PLANS)


def test_a_record_names_the_thresholds_reached_and_matches_its_schema() -> None:
    scores = [(plan, score) for plan, score in zip(PLANS, (200, 14), strict=True)]
    record = lead_scores("c-1", scores, "v1", T0)
    value = orjson.loads(record_value(record.content(), T0 + 0.5))
    jsonschema.validate(value, load_schema("lead-scores"))
    assert value == {
        "contact_id": "c-1",
        "plans": {
            "lead-score": {
                "score": 200,
                "thresholds": ["warm", "hot"],
                "plan_version": PLANS.version,
            },
            "icp-fit": {"score": 14, "thresholds": [], "plan_version": PLANS.version},
        },
        "plan_version": "v1",
        "last_activity": "2026-01-01T00:00:00Z",
        "changed_at": "2026-01-01T00:00:00.500Z",
    }


def test_a_contact_not_yet_scored_has_null_version_and_activity() -> None:
    value = orjson.loads(record_value(lead_scores("c-2", [], None, None).content(), T0))
    jsonschema.validate(value, load_schema("lead-scores"))
    assert (value["plans"], value["plan_version"], value["last_activity"]) == ({}, None, None)
