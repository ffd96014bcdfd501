"""The outcomes file: JSON Lines or CSV, bad rows reported with their line and reason."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from streams.models.outcomes import (
    Conversion,
    OutcomesError,
    load_outcomes,
    write_outcomes,
)

T = 1_772_366_400.0  # 2026-03-01T12:00:00Z


def test_json_lines_with_and_without_value(tmp_path: Path) -> None:
    path = tmp_path / "won.jsonl"
    path.write_text(
        '{"contact_id": "c-1", "converted_at": "2026-03-01T12:00:00Z", "value": 1200.5}\n'
        "\n"
        '{"contact_id": "c-2", "converted_at": "2026-03-01T13:00:00+01:00"}\n'
    )
    outcomes = load_outcomes(path)
    assert outcomes.conversions == {
        "c-1": Conversion("c-1", T, 1200.5),
        "c-2": Conversion("c-2", T, None),
    }
    assert outcomes.rejected == []


def test_bad_rows_are_counted_with_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "won.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"contact_id": "c-1", "converted_at": "2026-03-01T12:00:00Z"}',
                "not json",
                "[1, 2]",
                '{"converted_at": "2026-03-01T12:00:00Z"}',
                '{"contact_id": "c-3"}',
                '{"contact_id": "c-4", "converted_at": "yesterday"}',
                '{"contact_id": "c-5", "converted_at": "2026-03-01T12:00:00Z", "value": "a lot"}',
                '{"contact_id": "c-1", "converted_at": "2026-03-02T12:00:00Z"}',
            ]
        )
    )
    outcomes = load_outcomes(path)
    assert list(outcomes.conversions) == ["c-1"]
    assert outcomes.conversions["c-1"].converted_at == T  # the first row of a contact stays
    assert [(row.line, row.reason) for row in outcomes.rejected] == [
        (2, "bad-json"),
        (3, "not-an-object"),
        (4, "bad-contact-id"),
        (5, "missing-converted-at"),
        (6, "bad-time"),
        (7, "bad-value"),
        (8, "duplicate-contact"),
    ]
    assert "converted_at: missing; expected an RFC 3339 time" in outcomes.rejected[3].message
    assert "one row per contact" in outcomes.rejected[6].message


def test_csv_export_with_bom_gzipped_and_spaces_in_header(tmp_path: Path) -> None:
    path = tmp_path / "won.csv.gz"
    text = (
        "\ufeffcontact_id, converted_at ,value,stage\n"
        "c-1,2026-03-01T12:00:00Z,99,won\n"
        ",,,\n"
        "c-2,2026-03-01T12:00:00Z,,won\n"
        "c-3,01/03/2026,5,won\n"
    )
    path.write_bytes(gzip.compress(text.encode()))
    outcomes = load_outcomes(path)
    assert outcomes.conversions == {
        "c-1": Conversion("c-1", T, 99.0),
        "c-2": Conversion("c-2", T, None),
    }
    assert [(row.line, row.reason) for row in outcomes.rejected] == [(5, "bad-time")]


def test_csv_without_the_columns_fails_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "won.csv"
    path.write_text("id,date\nc-1,2026-03-01T12:00:00Z\n")
    with pytest.raises(OutcomesError, match="no contact_id and no converted_at column"):
        load_outcomes(path)


def test_unreadable_file_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(OutcomesError, match=r"missing\.jsonl: cannot read the outcomes file"):
        load_outcomes(tmp_path / "missing.jsonl")


def test_rows_naming_no_known_contact_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "won.jsonl"
    assert write_outcomes([Conversion("c-1", T), Conversion("c-9", T, 5.0)], path) == 2
    assert load_outcomes(path).unknown({"c-1", "c-2"}) == 1
