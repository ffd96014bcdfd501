"""Tracking events: the input contract (CloudEvents 1.0, structured or binary mode).

Decoding is total: every malformed input becomes an `EventError` naming the field and the
problem, so the stream worker can dead-letter it instead of crashing, and the backtest can
report the line.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import orjson

from streams.models.errors import EventError
from streams.models.times import format_time, parse_time

__all__ = [  # the names this module had before times and errors had modules of their own
    "EventError",
    "TrackingEvent",
    "decode_kafka_message",
    "format_time",
    "parse_binary",
    "parse_structured",
    "parse_time",
]
SPEC_VERSION: Final = "1.0"
MAX_EVENT_BYTES: Final = 64 * 1024
"""Largest accepted event, in bytes of the Kafka value or of the backtest's line without its
line break; bigger ones are dead-lettered (`oversized`)."""
MAX_HEADER_BYTES: Final = 64 * 1024
"""Most bytes of header names and values one Kafka message may carry; more are dead-lettered
(`oversized`). Binary mode's attributes are headers, and the outputs repeat the event's id and
source, so without it a 900 KB `ce_source` made outputs larger than the broker takes; a
re-routed copy repeats every header."""
MAX_CONTACT_ID_BYTES: Final = 1024
"""Longest contact id (UTF-8 bytes): a longer one could never be looked up over HTTP (the
request line would be refused), so it is dead-lettered (`contact-id-too-long`)."""

CONTACT_UPDATED: Final = "contact.updated"
CONTACT_ERASED: Final = "contact.erased"
NON_ACTIVITY_TYPES: Final = frozenset({CONTACT_UPDATED, CONTACT_ERASED})
"""Types that change what we know about a contact but are not something the contact did."""

_REQUIRED: Final = ("id", "source", "type", "time", "subject")
_BINARY_PREFIX: Final = "ce_"


class TrackingEvent:
    """One validated tracking event; `time` is epoch seconds (UTC) of when it happened.

    Immutable (`Final` fields; mypy refuses assignments), written out rather than a frozen
    dataclass: one is made per event, and a frozen dataclass's `__init__` sets each field
    through `object.__setattr__`, which cost 0.6 µs an event in the compiled core (a plain
    class: 0.03 µs) and more in the source."""

    __slots__ = ("data", "id", "source", "subject", "time", "type")

    def __init__(
        self,
        id: str,
        source: str,
        type: str,
        time: float,
        subject: str,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.id: Final = id
        self.source: Final = source
        self.type: Final = type
        self.time: Final = time
        self.subject: Final = subject
        self.data: Final[Mapping[str, Any]] = {} if data is None else data

    @property
    def contact_id(self) -> str:
        return self.subject

    def _fields(self) -> tuple[str, str, str, float, str, Mapping[str, Any]]:
        return self.id, self.source, self.type, self.time, self.subject, self.data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrackingEvent):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"TrackingEvent(id={self.id!r}, source={self.source!r}, type={self.type!r}, "
            f"time={self.time!r}, subject={self.subject!r}, data={self.data!r})"
        )

    def __reduce__(self) -> tuple[Callable[..., TrackingEvent], tuple[Any, ...]]:
        """Pickled through the constructor (`backtest --jobs` sends events between
        processes)."""
        return TrackingEvent, self._fields()

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


def parse_structured(raw: bytes | str | Mapping[str, Any], key: str | None = None) -> TrackingEvent:
    """A structured-mode CloudEvent (JSON object, or its text) to a validated event."""
    # A tuple, not `bytes | str` (a union object made on every call, compiled or not), and a
    # decoded object is a dict: no need to ask the `Mapping` ABC.
    obj = _load_json(raw) if isinstance(raw, (bytes, str)) else raw
    if type(obj) is not dict and not isinstance(obj, Mapping):
        raise EventError("not-object", f"expected a JSON object, got {_json_kind(obj)}")
    return _build(obj, _structured_data(obj), key)


def parse_binary(
    headers: Iterable[tuple[str, bytes | None]], value: bytes | None, key: str | None = None
) -> TrackingEvent:
    """A binary-mode CloudEvent (Kafka binding): attributes in `ce_` headers, data as value,
    its media type in `content-type` (JSON when absent, as the binding says).

    Of several headers with one name the last counts, as Kafka's `Headers.lastHeader`; a
    null-valued one (Java's `new RecordHeader(name, null)`) means the attribute has no value,
    as if absent."""
    attributes: dict[str, Any] = {}
    content_type: str | None = None
    for name, raw_header in headers:
        is_attribute = name.startswith(_BINARY_PREFIX)
        if raw_header is None:
            if is_attribute:
                attributes.pop(name[len(_BINARY_PREFIX) :], None)
            elif name.lower() == "content-type":
                content_type = None
        elif is_attribute or name.lower() == "content-type":
            try:
                text = raw_header.decode("utf-8")
            except UnicodeDecodeError:
                raise EventError("bad-header", f"header {name}: not UTF-8", name) from None
            if is_attribute:
                attributes[name[len(_BINARY_PREFIX) :]] = text
            else:
                content_type = text
    if value and not is_json_content_type(content_type):
        raise EventError(
            "unsupported-content-type",
            f"content-type: {content_type!r} is not JSON; only JSON data can be scored",
            "content-type",
        )
    data = None if not value else _load_json(value)
    return _build(attributes, data, key)


def decode_kafka_message(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None
) -> TrackingEvent:
    """Pick the CloudEvents mode from the headers (binary when `ce_specversion` is present,
    even with a null value).

    The key must be the contact id: without one, or with bytes that are not UTF-8 (which
    would have to be decoded lossily, so that different keys became one contact spread over
    partitions), the message is refused before its value is read. So are headers of more
    than `MAX_HEADER_BYTES`, and a header name that is not UTF-8 (kept as surrogates by the
    worker's reader, `streams.kafka.records`): Kafka's protocol says names are UTF-8.
    """
    if value is not None:
        check_size(value)
    if key is None:
        raise EventError("missing-key", "the message has no key; it must be the contact id")
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError("bad-key", "the message key is not UTF-8") from None
    header_list = list(headers or ())
    binary = False
    size = 0
    for name, raw_header in header_list:
        if name.isascii():
            size += len(name)
            binary = binary or name == "ce_specversion"
        else:
            try:
                size += len(name.encode("utf-8"))
            except UnicodeEncodeError:
                raise EventError("bad-header", f"header name {name!r} is not UTF-8") from None
        if raw_header is not None:
            size += len(raw_header)
    if size > MAX_HEADER_BYTES:
        raise EventError("oversized", f"headers are {size} bytes, limit {MAX_HEADER_BYTES}")
    if binary:
        return parse_binary(header_list, value, key_text)
    if not value:
        raise EventError("empty", "empty value and no ce_ headers")
    return parse_structured(value, key_text)


def check_size(value: bytes) -> None:
    """The one size limit, for both drivers: `MAX_EVENT_BYTES` of the event's own bytes."""
    if len(value) > MAX_EVENT_BYTES:
        raise EventError("oversized", f"value is {len(value)} bytes, limit {MAX_EVENT_BYTES}")


def _load_json(raw: bytes | str) -> Any:
    check_size(raw if isinstance(raw, bytes) else raw.encode("utf-8", errors="surrogatepass"))
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise EventError("not-json", f"not JSON: {error}") from None


def _structured_data(obj: Mapping[str, Any]) -> object:
    """`data`, or `data_base64` decoded: the JSON format carries bytes data that way (the
    CloudEvents SDK writes it for bytes), and leadscore scores JSON data only."""
    encoded = obj.get("data_base64")
    if encoded is None:
        return obj.get("data")
    if obj.get("data") is not None:
        raise EventError(
            "conflicting-data", "data_base64: not allowed together with data", "data_base64"
        )
    content_type = obj.get("datacontenttype")
    if not is_json_content_type(content_type):
        raise EventError(
            "unsupported-content-type",
            f"datacontenttype: {content_type!r} is not JSON; only JSON data can be scored",
            "datacontenttype",
        )
    if not isinstance(encoded, str):
        raise EventError("wrong-type", "data_base64: expected a base64 string", "data_base64")
    try:
        raw = b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise EventError(
            "bad-base64", f"data_base64: not base64 ({error})", "data_base64"
        ) from None
    return _load_json(raw)


def is_json_content_type(content_type: object) -> bool:
    """JSON as the CloudEvents JSON format defines it: absent means `application/json`; any
    `*/json` or `*/*+json` media type, parameters such as `charset` aside."""
    if content_type is None:
        return True
    if not isinstance(content_type, str):
        return False
    media = content_type.partition(";")[0].strip().lower()
    kind, slash, subtype = media.partition("/")
    return bool(kind) and slash == "/" and (subtype == "json" or subtype.endswith("+json"))


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
    get = attributes.get
    event_id: Any = get("id")
    source: Any = get("source")
    event_type: Any = get("type")
    time: Any = get("time")
    subject: Any = get("subject")
    if not (  # the usual case in one test; the loop below names the first field that fails
        type(event_id) is str
        and type(source) is str
        and type(event_type) is str
        and type(time) is str
        and type(subject) is str
        and event_id
        and source
        and event_type
        and time
        and subject
    ):
        _check_required(attributes)
    if data is None:
        data = {}
    elif type(data) is not dict and not isinstance(data, Mapping):
        raise EventError("wrong-type", f"data: expected an object, got {_json_kind(data)}", "data")
    if len(subject) * 4 > MAX_CONTACT_ID_BYTES:  # only then can it be too long
        size = len(subject.encode("utf-8", errors="surrogatepass"))
        if size > MAX_CONTACT_ID_BYTES:
            raise EventError(
                "contact-id-too-long",
                f"subject: {size} bytes, limit {MAX_CONTACT_ID_BYTES}",
                "subject",
            )
    if key is not None and key != subject:
        raise EventError(
            "key-mismatch", f"subject {subject!r} does not match the message key {key!r}", "subject"
        )
    if event_type == CONTACT_UPDATED:
        _check_attributes(data)
    return TrackingEvent(event_id, source, event_type, parse_time(time), subject, data)


def _check_required(attributes: Mapping[str, Any]) -> None:
    for name in _REQUIRED:
        value = attributes.get(name)
        if value is None:
            raise EventError("missing-field", f"{name}: required", name)
        if not isinstance(value, str):
            raise EventError("wrong-type", f"{name}: expected a string", name)
        if not value:
            raise EventError("wrong-type", f"{name}: must not be empty", name)


def _check_attributes(data: Mapping[str, Any]) -> None:
    attributes = data.get("attributes")
    if attributes is None:
        raise EventError("missing-field", "data.attributes: required", "data.attributes")
    if not isinstance(attributes, Mapping):
        raise EventError(
            "wrong-type", "data.attributes: expected an object of name: value", "data.attributes"
        )
