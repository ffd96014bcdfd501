"""The plans topic's records: a version's envelope, and why a record cannot be used."""

from __future__ import annotations

import orjson
import pytest

from streams.models.plan_versions import Change, parse_plan_version
from streams.models.times import parse_time
from streams.worker.plans.topic import (
    FORMAT,
    Unusable,
    UnusableVersionError,
    decode_version,
    encode_version,
    publish_time,
)
from tests.worker.harness import EXAMPLE_PLANS

TEXT = EXAMPLE_PLANS.read_text()
V2 = "version: v2\nchange: forward\n" + TEXT


def test_a_version_goes_through_its_envelope_unchanged() -> None:
    version = parse_plan_version(V2, "v2.yaml").installed_at(publish_time(1_767_225_600.1234))
    key, value = encode_version(version)
    assert key == b"v2"
    decoded = decode_version(key, value, "topic")
    assert (decoded.label, decoded.text, decoded.change) == ("v2", V2, Change.FORWARD)
    assert decoded.effective_from == version.effective_from == 1_767_225_600.123
    assert [plan.name for plan in decoded.plans] == [plan.name for plan in version.plans]


def test_the_file_says_when_it_takes_over_or_the_envelope_does() -> None:
    text = 'version: v3\neffective_from: "2026-03-01T00:00:00Z"\n' + TEXT
    version = parse_plan_version(text).installed_at(0.0)  # the file's time wins
    assert version.effective_from == parse_time("2026-03-01T00:00:00Z")
    key, value = encode_version(version)
    assert decode_version(key, value, "t").effective_from == version.effective_from
    envelope = orjson.loads(value) | {"effective_from": "2026-04-01T00:00:00Z"}
    with pytest.raises(UnusableVersionError, match="effective_from differs"):
        decode_version(key, orjson.dumps(envelope), "t")


def _envelope(**fields: object) -> bytes:
    return orjson.dumps({"format": FORMAT, "effective_from": "2026-01-01T00:00:00Z"} | fields)


@pytest.mark.parametrize(
    ("key", "value", "reason", "message"),
    [
        (b"v2", _envelope(format=FORMAT + 1, text=V2), Unusable.NEWER_FORMAT, "upgrade"),
        (b"v2", b"{not json", Unusable.INVALID, "not a JSON envelope"),
        (b"v2", b"[1]", Unusable.INVALID, "not a JSON object"),
        (b"v2", _envelope(format="1", text=V2), Unusable.INVALID, "no envelope format"),
        (b"v2", _envelope(text=None), Unusable.INVALID, "no plans text"),
        (b"v9", _envelope(text=V2), Unusable.INVALID, "is not the version's label 'v2'"),
        (b"v2", _envelope(text="version: v2\nplans: 3\n"), Unusable.INVALID, "t: plans"),
        (b"v2", _envelope(text=V2, effective_from="soon"), Unusable.INVALID, "RFC 3339"),
    ],
)
def test_a_record_that_is_no_usable_version_says_why(
    key: bytes, value: bytes, reason: Unusable, message: str
) -> None:
    with pytest.raises(UnusableVersionError, match=message) as raised:
        decode_version(key, value, "t")
    assert raised.value.reason is reason


def test_a_version_must_know_when_it_takes_over_to_be_published() -> None:
    with pytest.raises(ValueError, match="effective_from"):
        encode_version(parse_plan_version(V2))
