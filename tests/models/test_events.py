"""Decoding tracking events: both CloudEvents modes, and a precise reason for every bad input."""

from __future__ import annotations

import orjson
import pytest

from streams.models.events import (
    MAX_EVENT_BYTES,
    EventError,
    decode_kafka_message,
    format_time,
    parse_structured,
)

VALID = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "/web",
    "type": "page.visited",
    "time": "2026-03-01T12:00:00.250+01:00",
    "subject": "c-1",
    "data": {"url": "https://example.com/pricing"},
}


def test_structured_mode_round_trip() -> None:
    event = parse_structured(orjson.dumps(VALID))
    assert (event.id, event.source, event.type, event.subject) == (
        "e-1",
        "/web",
        "page.visited",
        "c-1",
    )
    assert format_time(event.time) == "2026-03-01T11:00:00.250Z"
    assert parse_structured(event.to_cloudevent()) == event


def test_binary_mode_reads_ce_headers_and_data_value() -> None:
    headers = [(f"ce_{k}", str(v).encode()) for k, v in VALID.items() if k != "data"]
    headers.append(("content-type", b"application/json"))
    event = decode_kafka_message(b"c-1", orjson.dumps(VALID["data"]), headers)
    assert event.data == VALID["data"] and event.subject == "c-1"


def test_data_is_optional() -> None:
    assert parse_structured({k: v for k, v in VALID.items() if k != "data"}).data == {}


def _without(name: str) -> dict[str, object]:
    return {k: v for k, v in VALID.items() if k != name}


@pytest.mark.parametrize(
    ("value", "key", "reason", "field"),
    [
        (b"{not json", None, "not-json", None),
        (b"[1, 2]", None, "not-object", None),
        (orjson.dumps(_without("subject")), None, "missing-field", "subject"),
        (orjson.dumps(_without("specversion")), None, "missing-field", "specversion"),
        (orjson.dumps({**VALID, "id": 42}), None, "wrong-type", "id"),
        (orjson.dumps({**VALID, "source": ""}), None, "wrong-type", "source"),
        (orjson.dumps({**VALID, "data": [1]}), None, "wrong-type", "data"),
        (orjson.dumps({**VALID, "time": "yesterday"}), None, "bad-time", "time"),
        (orjson.dumps({**VALID, "time": "2026-03-01T12:00:00"}), None, "bad-time", "time"),
        (orjson.dumps({**VALID, "specversion": "0.3"}), None, "bad-specversion", "specversion"),
        (orjson.dumps(VALID), b"c-2", "key-mismatch", "subject"),
        (
            orjson.dumps({**VALID, "type": "contact.updated", "data": {}}),
            None,
            "missing-field",
            "data.attributes",
        ),
        (
            orjson.dumps({**VALID, "type": "contact.updated", "data": {"attributes": [1]}}),
            None,
            "wrong-type",
            "data.attributes",
        ),
        (b"x" * (MAX_EVENT_BYTES + 1), None, "oversized", None),
        (b"", None, "empty", None),
    ],
)
def test_bad_input_is_rejected_with_a_reason(
    value: bytes, key: bytes | None, reason: str, field: str | None
) -> None:
    with pytest.raises(EventError) as caught:
        decode_kafka_message(key, value, [])
    assert caught.value.reason == reason
    assert caught.value.field_name == field
    if field is not None:
        assert str(caught.value).startswith(field)


def test_binary_mode_with_a_header_that_is_not_utf8() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"\xff\xfe")]
    with pytest.raises(EventError) as caught:
        decode_kafka_message(None, b"{}", headers)
    assert caught.value.reason == "bad-header"
