"""RFC 3339 exactly: what the grammar allows is read, everything else is `bad-time`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.models.errors import EventError
from streams.models.times import EARLIEST, END, format_time, parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00Z", "2026-03-01T12:00:00Z"),
        ("2026-03-01t12:00:00z", "2026-03-01T12:00:00Z"),
        ("2026-03-01T13:30:00+01:30", "2026-03-01T12:00:00Z"),
        ("2026-03-01T11:00:00-01:00", "2026-03-01T12:00:00Z"),
        ("2026-03-01T12:00:00-00:00", "2026-03-01T12:00:00Z"),
        ("2026-03-01T12:00:00.25Z", "2026-03-01T12:00:00.250Z"),
        ("2026-03-01T12:00:00.123456789Z", "2026-03-01T12:00:00.123Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"),
        # Leap seconds are read as 23:59:59 UTC with the same fraction.
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59Z"),
        ("2016-12-31T23:59:60.5Z", "2016-12-31T23:59:59.500Z"),
        ("1990-12-31T15:59:60-08:00", "1990-12-31T23:59:59Z"),  # RFC 3339's own example
        ("2015-06-30T23:59:60Z", "2015-06-30T23:59:59Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
        ("9999-12-31T23:59:60Z", "9999-12-31T23:59:59Z"),
        ("0000-12-31T23:30:00-01:00", "0001-01-01T00:30:00Z"),
    ],
)
def test_rfc3339_is_read(text: str, expected: str) -> None:
    assert format_time(parse_time(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "20260301T120000Z",  # ISO 8601 basic format
        "2026-03-01T12Z",  # no minutes or seconds
        "2026-03-01T12:00Z",
        "2026-03-01 12:00:00Z",  # a space for the T
        "2026-03-01T12:00:00",  # no offset
        "2026-03-01T12:00:00+0100",
        "2026-03-01T12:00:00+01",
        "2026-03-01T12:00:00.Z",
        "2026-03-01T12:00:00,5Z",
        "2026-3-01T12:00:00Z",
        "2026-03-01",
        "2026-03-01T12:00:00Z ",
        "\uff12\uff10\uff12\uff16-03-01T12:00:00Z",  # non-ASCII digits
        "2026-13-01T12:00:00Z",
        "2026-00-01T12:00:00Z",
        "2026-02-29T12:00:00Z",
        "2026-04-31T12:00:00Z",
        "2026-03-00T12:00:00Z",
        "2026-03-01T24:00:00Z",
        "2026-03-01T12:60:00Z",
        "2026-03-01T12:00:61Z",
        "2026-03-01T12:00:00+24:00",
        "2026-03-01T12:00:00+01:60",
        # A leap second anywhere but at 23:59:60 UTC on the last day of a month.
        "2016-12-31T12:59:60Z",
        "2016-12-30T23:59:60Z",
        "2016-12-31T23:59:60+01:00",
        # Times the outputs cannot write.
        "9999-12-31T23:30:00-01:00",
        "0001-01-01T00:30:00+01:00",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.99999Z",  # rounds to 10000-01-01 as a float
    ],
)
def test_anything_else_is_a_bad_time(text: str) -> None:
    with pytest.raises(EventError) as caught:
        parse_time(text)
    assert caught.value.reason == "bad-time"
    assert caught.value.field_name == "time"


def test_a_time_that_is_not_a_string() -> None:
    with pytest.raises(EventError, match="expected an RFC 3339 string"):
        parse_time(1772366400)


def test_the_bounds_are_the_outputs_bounds() -> None:
    assert format_time(EARLIEST) == "0001-01-01T00:00:00Z"
    assert format_time(END - 1e-3).startswith("9999-12-31T23:59:59.99")
    with pytest.raises(ValueError, match="out of range"):
        format_time(END)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1, 0, 0, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 58),
        timezones=st.just(UTC),
    ),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_agrees_with_datetime_on_every_rfc3339_time(moment: datetime, offset_minutes: int) -> None:
    """The hand-written arithmetic (taken for a lowercase `t`) gives what `datetime` gives,
    offsets included, and so does the common shape's fast path."""
    sign = "+" if offset_minutes >= 0 else "-"
    local = moment.replace(tzinfo=None)  # read as a wall time at the offset
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = f"{local.isoformat(timespec='microseconds')}{sign}{hours:02}:{minutes:02}"
    expected = datetime.fromisoformat(text).timestamp()
    for variant in (text, text.replace("T", "t")):
        if EARLIEST <= expected < END:
            assert parse_time(variant) == expected
        else:
            with pytest.raises(EventError):
                parse_time(variant)


@pytest.mark.parametrize("digits", range(1, 10))
@pytest.mark.parametrize("offset", ["Z", "+05:45", "-11:30"])
def test_the_fast_path_and_the_exact_parser_agree_on_fractions(digits: int, offset: str) -> None:
    text = f"2026-03-01T12:34:56.{'987654321'[:digits]}{offset}"
    assert parse_time(text) == parse_time(text.replace("T", "t"))
    assert parse_time(text) == datetime.fromisoformat(text).timestamp()
