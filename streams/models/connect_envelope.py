"""`lead-scores` values in Kafka Connect's JSON envelope, for sink connectors that need a schema.

Why: a JDBC sink connector (Debezium's, Confluent's, Aiven's) writes columns from a Connect
`Struct`, so it needs each value's schema. Connect's `JsonConverter` with `schemas.enable=true`
reads it from the value itself: `{"schema": ..., "payload": ...}`. No schema registry is
needed, and the key stays the plain contact id that compaction and co-partitioning rely on
(the sink reads it with Connect's `StringConverter`).

The payload is flat, one column per field, so that a CRM sync reads a row per contact:

- `contact_id`, `plan_version`, `last_activity`, `changed_at` as in the plain record;
- per plan in the record, `score_<plan>` (int64) and `thresholds_<plan>` (array of strings);
  a table grows a column pair when a plan first appears (Debezium's `schema.evolution=basic`);
- `plans`: the plain record's `plans` object as JSON text, every detail (the plan version of
  each score) in one column.

The times keep their RFC 3339 text and are named `io.debezium.time.ZonedTimestamp` (a
`timestamptz` column in PostgreSQL under Debezium; text under a connector that does not know
the name), and `plans` is named `io.debezium.data.Json` (`jsonb` under Debezium).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from streams.models.lead_scores import record

SCHEMA_NAME = "leadscore.LeadScores"
JSON_TEXT = "io.debezium.data.Json"
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"


def score_field(plan: str) -> str:
    """The payload field (and so the column) holding the score in `plan`."""
    return f"score_{plan}"


def thresholds_field(plan: str) -> str:
    """The payload field (and so the column) holding the thresholds reached in `plan`."""
    return f"thresholds_{plan}"


def _field(name: str, kind: str, *, optional: bool, semantic: str | None = None) -> dict[str, Any]:
    field: dict[str, Any] = {"field": name, "type": kind, "optional": optional}
    if semantic is not None:
        field["name"] = semantic
    return field


def envelope(value: Mapping[str, Any]) -> dict[str, Any]:
    """The Connect JSON envelope of a plain `lead-scores` value (schemas/lead-scores.schema.json).

    The plan columns are optional (nullable): a contact that has no score in a plan leaves its
    column empty instead of failing the insert. Plans come in name order, so equal values get
    equal schemas, which lets a sink batch them.
    """
    plans: Mapping[str, Mapping[str, Any]] = value["plans"]
    fields = [
        _field("contact_id", "string", optional=False),
        _field("plan_version", "string", optional=True),
        _field("last_activity", "string", optional=True, semantic=ZONED_TIMESTAMP),
        _field("changed_at", "string", optional=False, semantic=ZONED_TIMESTAMP),
        _field("plans", "string", optional=False, semantic=JSON_TEXT),
    ]
    payload: dict[str, Any] = {
        "contact_id": value["contact_id"],
        "plan_version": value["plan_version"],
        "last_activity": value["last_activity"],
        "changed_at": value["changed_at"],
        "plans": orjson.dumps(plans).decode(),
    }
    for name in sorted(plans):
        fields.append(_field(score_field(name), "int64", optional=True))
        fields.append(
            {
                **_field(thresholds_field(name), "array", optional=True),
                "items": _field("", "string", optional=False),
            }
        )
        payload[score_field(name)] = plans[name]["score"]
        payload[thresholds_field(name)] = list(plans[name]["thresholds"])
    schema = {"type": "struct", "name": SCHEMA_NAME, "optional": False, "fields": fields}
    return {"schema": schema, "payload": payload}


def connect_json(content: dict[str, Any], changed_at: float) -> bytes:
    """A record's value in the envelope, from its `LeadScores.content()`: what the worker
    sends with `--lead-scores-format connect-json`."""
    return orjson.dumps(envelope(record(content, changed_at)))
