"""Decoding tracking events: both CloudEvents modes, and a precise reason for every bad input."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from cloudevents.core.bindings import kafka as cloudevents_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from streams.models.events import (
    MAX_CONTACT_ID_BYTES,
    MAX_EVENT_BYTES,
    MAX_HEADER_BYTES,
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


@pytest.mark.parametrize(
    ("content_type", "reason"),
    [
        (None, None),
        (b"application/cloudevents+json; charset=utf-8", None),
        (b"text/plain", "unsupported-content-type"),
        (b"application/\xff", "bad-header"),
    ],
)
def test_binary_mode_scores_json_data_only(content_type: bytes | None, reason: str | None) -> None:
    """The Kafka binding puts the data's media type in `content-type`: a text or XML body is
    refused with its own reason rather than parsed as JSON (or as `not-json`)."""
    headers = [(f"ce_{k}", str(v).encode()) for k, v in VALID.items() if k != "data"]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    value = orjson.dumps(VALID["data"])
    if reason is None:
        assert decode_kafka_message(b"c-1", value, headers).data == VALID["data"]
        return
    with pytest.raises(EventError) as caught:
        decode_kafka_message(b"c-1", value, headers)
    assert caught.value.reason == reason


def test_data_is_optional() -> None:
    assert parse_structured({k: v for k, v in VALID.items() if k != "data"}).data == {}


KEY = b"c-1"
LONG_ID = "ł" * (MAX_CONTACT_ID_BYTES // 2 + 1)


def _base64(data: bytes, content_type: str | None = "application/json") -> dict[str, object]:
    event = {k: v for k, v in VALID.items() if k != "data"}
    event["data_base64"] = base64.b64encode(data).decode()
    if content_type is not None:
        event["datacontenttype"] = content_type
    return event


def _without(name: str) -> dict[str, object]:
    return {k: v for k, v in VALID.items() if k != name}


@pytest.mark.parametrize(
    ("value", "key", "reason", "field"),
    [
        (b"{not json", KEY, "not-json", None),
        (b"[1, 2]", KEY, "not-object", None),
        (orjson.dumps(_without("subject")), KEY, "missing-field", "subject"),
        (orjson.dumps(_without("specversion")), KEY, "missing-field", "specversion"),
        (orjson.dumps({**VALID, "id": 42}), KEY, "wrong-type", "id"),
        (orjson.dumps({**VALID, "source": ""}), KEY, "wrong-type", "source"),
        (orjson.dumps({**VALID, "data": [1]}), KEY, "wrong-type", "data"),
        (orjson.dumps({**VALID, "time": "yesterday"}), KEY, "bad-time", "time"),
        (orjson.dumps({**VALID, "time": "2026-03-01T12:00:00"}), KEY, "bad-time", "time"),
        (orjson.dumps({**VALID, "specversion": "0.3"}), KEY, "bad-specversion", "specversion"),
        (orjson.dumps(VALID), b"c-2", "key-mismatch", "subject"),
        (
            orjson.dumps({**VALID, "type": "contact.updated", "data": {}}),
            KEY,
            "missing-field",
            "data.attributes",
        ),
        (
            orjson.dumps({**VALID, "type": "contact.updated", "data": {"attributes": [1]}}),
            KEY,
            "wrong-type",
            "data.attributes",
        ),
        (b"x" * (MAX_EVENT_BYTES + 1), KEY, "oversized", None),
        (b"", KEY, "empty", None),
        (orjson.dumps(VALID), None, "missing-key", None),
        (orjson.dumps(VALID), b"c-\xff", "bad-key", None),
        (orjson.dumps({**VALID, "time": "9999-12-31T23:30:00-01:00"}), KEY, "bad-time", "time"),
        (orjson.dumps({**VALID, "time": "0001-01-01T00:30:00+01:00"}), KEY, "bad-time", "time"),
        (orjson.dumps({**VALID, "time": "2026-03-01 12:00:00Z"}), KEY, "bad-time", "time"),
        (
            orjson.dumps({**VALID, "subject": LONG_ID}),
            LONG_ID.encode(),
            "contact-id-too-long",
            "subject",
        ),
        (orjson.dumps(_base64(b"not json")), KEY, "not-json", None),
        (
            orjson.dumps(_base64(b'{"url": "x"}', "application/octet-stream")),
            KEY,
            "unsupported-content-type",
            "datacontenttype",
        ),
        (orjson.dumps({**_base64(b"{}"), "data_base64": "%%%"}), KEY, "bad-base64", "data_base64"),
        (orjson.dumps({**_base64(b"{}"), "data_base64": 42}), KEY, "wrong-type", "data_base64"),
        (orjson.dumps({**_base64(b"{}"), "data": {}}), KEY, "conflicting-data", "data_base64"),
        (orjson.dumps(_base64(b"[1]")), KEY, "wrong-type", "data"),
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
        decode_kafka_message(KEY, b"{}", headers)
    assert caught.value.reason == "bad-header"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/json",
        "application/vnd.acme+JSON",
    ],
)
def test_data_base64_with_json_content_is_decoded(content_type: str | None) -> None:
    event = parse_structured(_base64(orjson.dumps(VALID["data"]), content_type))
    assert event == parse_structured(VALID)


def test_the_largest_event_and_the_longest_contact_id_are_accepted() -> None:
    longest = "ł" * (MAX_CONTACT_ID_BYTES // 2)
    event = {**VALID, "subject": longest, "data": {"url": ""}}
    padding = MAX_EVENT_BYTES - len(orjson.dumps(event))
    value = orjson.dumps({**event, "data": {"url": "u" * padding}})
    assert len(value) == MAX_EVENT_BYTES
    assert decode_kafka_message(longest.encode(), value, []).subject == longest


def _sdk_event(data: bytes, content_type: str) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": "e-1",
            "source": "/web",
            "type": "page.visited",
            "subject": "c-1",
            "time": datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1))),
            "datacontenttype": content_type,
        },
        data=data,
    )


def test_the_cloudevents_sdk_structured_mode_with_bytes_data() -> None:
    """The SDK writes bytes data as `data_base64`: JSON bytes are scored, others refused."""
    message = cloudevents_kafka.to_structured(
        _sdk_event(orjson.dumps(VALID["data"]), "application/json"), JSONFormat()
    )
    assert b"data_base64" in message.value
    headers = [(name, value) for name, value in message.headers.items()]
    event = decode_kafka_message(KEY, message.value, headers)
    assert (event.data, event.subject, format_time(event.time)) == (
        VALID["data"],
        "c-1",
        "2026-03-01T11:00:00.250Z",
    )
    image = cloudevents_kafka.to_structured(_sdk_event(b"\x89PNG", "image/png"), JSONFormat())
    with pytest.raises(EventError) as caught:
        decode_kafka_message(KEY, image.value, list(image.headers.items()))
    assert caught.value.reason == "unsupported-content-type"


BINARY = [(f"ce_{k}", str(v).encode()) for k, v in VALID.items() if k != "data"]
STRUCTURED = [("content-type", b"application/cloudevents+json")]
Headers = list[tuple[str, bytes | None]]


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        # A null-valued header (Java's `new RecordHeader(name, null)`) is no value.
        (orjson.dumps(VALID["data"]), [*BINARY, ("traceparent", None)], None),
        (orjson.dumps(VALID["data"]), [*BINARY, ("ce_traceparent", None)], None),
        (orjson.dumps(VALID["data"]), [*BINARY, ("content-type", None)], None),
        (orjson.dumps(VALID), [*STRUCTURED, ("ce_id", None), ("x", None)], None),
        (orjson.dumps(VALID), [("content-type", None)], None),
        (orjson.dumps(VALID["data"]), [("ce_specversion", None), *BINARY[1:]], "missing-field"),
        (orjson.dumps(VALID), [*STRUCTURED, ("ce_specversion", None)], "missing-field"),
        # Of several headers with one name the last counts, a null one too.
        (orjson.dumps(VALID["data"]), [*BINARY, ("ce_id", b"e-1")], None),
        (orjson.dumps(VALID["data"]), [*BINARY, ("ce_id", None)], "missing-field"),
        (orjson.dumps(VALID["data"]), [*BINARY, ("ce_subject", b"c-2")], "key-mismatch"),
        (orjson.dumps(VALID["data"]), [*BINARY, ("content-type", b"text/plain")],
         "unsupported-content-type"),
        # Thousands of headers are fine, more than MAX_HEADER_BYTES of them are not.
        (orjson.dumps(VALID), [(f"h{i % 9}", None if i % 2 else b"") for i in range(5_000)], None),
        (orjson.dumps(VALID), [("h", b"x" * (MAX_HEADER_BYTES - 1))], None),
        (orjson.dumps(VALID), [("h", b"x" * MAX_HEADER_BYTES)], "oversized"),
        (orjson.dumps(VALID["data"]),
         [(n, b"s" * MAX_HEADER_BYTES if n == "ce_source" else v) for n, v in BINARY],
         "oversized"),
        (orjson.dumps(VALID), [("ł" * (MAX_HEADER_BYTES // 2 + 1), b"")], "oversized"),
        # A name that is not UTF-8, as the worker's reader keeps it (surrogates).
        (orjson.dumps(VALID), [*STRUCTURED, (b"x\xff".decode(errors="surrogateescape"), b"")],
         "bad-header"),
        (orjson.dumps(VALID), [*STRUCTURED, ("zażółć", None)], None),
        (None, BINARY, None),
    ],
)  # fmt: skip
def test_header_values_may_be_null_and_headers_are_bounded(
    value: bytes | None, headers: Headers, reason: str | None
) -> None:
    if reason is None:
        assert decode_kafka_message(KEY, value, headers).id == "e-1"
        return
    with pytest.raises(EventError) as caught:
        decode_kafka_message(KEY, value, headers)
    assert caught.value.reason == reason
