"""Tracking events: the input contract (CloudEvents 1.0, structured or binary mode).

Decoding is total: every malformed input becomes an `EventError` naming the field and the
problem, so the stream worker can dead-letter it instead of crashing, and the backtest can
report the line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

SPEC_VERSION = "1.0"
MAX_EVENT_BYTES = 64 * 1024
"""Largest accepted event value; bigger ones are dead-lettered (`oversized`)."""

CONTACT_UPDATED = "contact.updated"
CONTACT_ERASED = "contact.erased"
NON_ACTIVITY_TYPES = frozenset({CONTACT_UPDATED, CONTACT_ERASED})
"""Types that change what we know about a contact but are not something the contact did."""

_REQUIRED = ("id", "source", "type", "time", "subject")
_BINARY_PREFIX = "ce_"


class EventError(ValueError):
    """A tracking event that cannot be scored; `reason` is a short stable code for metrics."""

    def __init__(self, reason: str, message: str, field_name: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field_name = field_name


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    """One validated tracking event; `time` is epoch seconds (UTC) of when it happened."""

    id: str
    source: str
    type: str
    time: float
    subject: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def contact_id(self) -> str:
        return self.subject

    def to_cloudevent(self) -> dict[str, Any]:
        """The structured-mode JSON object for this event (what `leadscore simulate` writes)."""
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": format_time(self.time),
            "subject": self.subject,
            "datacontenttype": "application/json",
            "data": dict(self.data),
        }


def format_time(epoch_seconds: float) -> str:
    """RFC 3339 in UTC with a `Z`, millisecond precision when there is a fraction."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def parse_time(value: object, field_name: str = "time") -> float:
    """RFC 3339 timestamp to epoch seconds; a timestamp without an offset is rejected."""
    if not isinstance(value, str):
        raise EventError("bad-time", f"{field_name}: expected an RFC 3339 string", field_name)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise EventError(
            "bad-time", f"{field_name}: {value!r} is not an RFC 3339 timestamp", field_name
        ) from None
    if moment.tzinfo is None:
        raise EventError(
            "bad-time", f"{field_name}: {value!r} has no UTC offset (add Z or +hh:mm)", field_name
        )
    return moment.timestamp()


def parse_structured(raw: bytes | str | Mapping[str, Any], key: str | None = None) -> TrackingEvent:
    """A structured-mode CloudEvent (JSON object, or its text) to a validated event."""
    obj = _load_json(raw) if isinstance(raw, bytes | str) else raw
    if not isinstance(obj, Mapping):
        raise EventError("not-object", f"expected a JSON object, got {_json_kind(obj)}")
    return _build(obj, obj.get("data"), key)


def parse_binary(
    headers: Iterable[tuple[str, bytes | None]], value: bytes | None, key: str | None = None
) -> TrackingEvent:
    """A binary-mode CloudEvent (Kafka binding): attributes in `ce_` headers, data as value."""
    attributes: dict[str, Any] = {}
    for name, raw_header in headers:
        if name.startswith(_BINARY_PREFIX) and raw_header is not None:
            try:
                attributes[name[len(_BINARY_PREFIX) :]] = raw_header.decode("utf-8")
            except UnicodeDecodeError:
                raise EventError("bad-header", f"header {name}: not UTF-8", name) from None
    data = None if not value else _load_json(value)
    return _build(attributes, data, key)


def decode_kafka_message(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None
) -> TrackingEvent:
    """Pick the CloudEvents mode from the headers (binary when `ce_specversion` is present)."""
    if value is not None and len(value) > MAX_EVENT_BYTES:
        raise EventError("oversized", f"value is {len(value)} bytes, limit {MAX_EVENT_BYTES}")
    header_list = list(headers or ())
    key_text = None if key is None else key.decode("utf-8", errors="replace")
    if any(name == "ce_specversion" for name, _ in header_list):
        return parse_binary(header_list, value, key_text)
    if not value:
        raise EventError("empty", "empty value and no ce_ headers")
    return parse_structured(value, key_text)


def _load_json(raw: bytes | str) -> Any:
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError("oversized", f"value is {len(raw)} bytes, limit {MAX_EVENT_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise EventError("not-json", f"not JSON: {error}") from None


def _json_kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _build(attributes: Mapping[str, Any], data: object, key: str | None) -> TrackingEvent:
    specversion = attributes.get("specversion")
    if specversion is None:
        raise EventError("missing-field", "specversion: required", "specversion")
    if specversion != SPEC_VERSION:
        raise EventError(
            "bad-specversion", f"specversion: expected '1.0', got {specversion!r}", "specversion"
        )
    for name in _REQUIRED:
        value = attributes.get(name)
        if value is None:
            raise EventError("missing-field", f"{name}: required", name)
        if not isinstance(value, str):
            raise EventError("wrong-type", f"{name}: expected a string", name)
        if not value:
            raise EventError("wrong-type", f"{name}: must not be empty", name)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise EventError("wrong-type", f"data: expected an object, got {_json_kind(data)}", "data")
    subject = attributes["subject"]
    if key is not None and key != subject:
        raise EventError(
            "key-mismatch", f"subject {subject!r} does not match the message key {key!r}", "subject"
        )
    event_type = attributes["type"]
    if event_type == CONTACT_UPDATED:
        _check_attributes(data)
    return TrackingEvent(
        id=attributes["id"],
        source=attributes["source"],
        type=event_type,
        time=parse_time(attributes["time"]),
        subject=subject,
        data=data,
    )


def _check_attributes(data: Mapping[str, Any]) -> None:
    attributes = data.get("attributes")
    if attributes is None:
        raise EventError("missing-field", "data.attributes: required", "data.attributes")
    if not isinstance(attributes, Mapping):
        raise EventError(
            "wrong-type", "data.attributes: expected an object of name: value", "data.attributes"
        )
