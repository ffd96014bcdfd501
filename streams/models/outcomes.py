"""Outcomes: what happened to contacts after they were scored, e.g. a CRM's closed-won export.

One row per converted contact: `contact_id`, `converted_at` (RFC 3339) and an optional `value`
(the deal's size), as JSON Lines (`.jsonl`, `.json`, `.ndjson`, gzipped or not) or CSV with a
header row (`.csv`, `.csv.gz`). A contact without a row did not convert.

Read like the events are: a bad row is counted and reported with its line and reason, not a
reason to stop, because an export from another system always has a few; the file only fails as a
whole when it cannot be read at all or names no column it needs.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from streams.models.errors import EventError
from streams.models.events import MAX_CONTACT_ID_BYTES
from streams.models.times import format_time, parse_time

COLUMNS: Final = ("contact_id", "converted_at", "value")
CSV_SUFFIXES: Final = (".csv",)


class OutcomesError(ValueError):
    """An outcomes file that cannot be read at all; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class Conversion:
    contact_id: str
    converted_at: float
    value: float | None = None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "contact_id": self.contact_id,
            "converted_at": format_time(self.converted_at),
        }
        if self.value is not None:
            row["value"] = self.value
        return row


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    reason: str
    message: str


@dataclass(slots=True)
class Outcomes:
    """The valid conversions by contact id, and the rows that were not."""

    origin: str
    conversions: dict[str, Conversion] = field(default_factory=dict)
    rejected: list[RejectedRow] = field(default_factory=list)

    def unknown(self, known: Iterable[str]) -> int:
        """Conversions of contacts not in `known` (e.g. the events' contacts): a CRM export
        often holds leads that never reached the tracking, which no plan could have scored."""
        return len(self.conversions.keys() - set(known))


def load_outcomes(path: Path) -> Outcomes:
    """Read and validate an outcomes file (its format from its name)."""
    name = path.name.removesuffix(".gz")
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.name.endswith(".gz") else raw
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise OutcomesError(f"{path}: cannot read the outcomes file: {error}") from None
    rows = _csv_rows(data, path) if name.endswith(CSV_SUFFIXES) else _json_rows(data)
    return collect(rows, str(path))


def collect(rows: Iterable[tuple[int, Mapping[str, Any] | EventError]], origin: str) -> Outcomes:
    """Validate (line, row) pairs into `Outcomes`; a second row for a contact is rejected,
    since which of two conversion times is meant cannot be guessed."""
    outcomes = Outcomes(origin)
    for line, row in rows:
        try:
            if isinstance(row, EventError):
                raise row
            conversion = parse_row(row)
        except EventError as error:
            outcomes.rejected.append(RejectedRow(line, error.reason, str(error)))
            continue
        if conversion.contact_id in outcomes.conversions:
            outcomes.rejected.append(
                RejectedRow(
                    line,
                    "duplicate-contact",
                    f"contact_id: {conversion.contact_id!r} has a conversion on an earlier "
                    "line; give one row per contact",
                )
            )
            continue
        outcomes.conversions[conversion.contact_id] = conversion
    return outcomes


def parse_row(row: Mapping[str, Any]) -> Conversion:
    """One row, or an `EventError` naming the field and what is expected."""
    contact_id = row.get("contact_id")
    if not isinstance(contact_id, str) or not contact_id:
        raise EventError("bad-contact-id", "contact_id: expected a non-empty string", "contact_id")
    if len(contact_id.encode("utf-8", errors="surrogatepass")) > MAX_CONTACT_ID_BYTES:
        raise EventError(
            "contact-id-too-long",
            f"contact_id: longer than {MAX_CONTACT_ID_BYTES} bytes",
            "contact_id",
        )
    if row.get("converted_at") in (None, ""):
        raise EventError(
            "missing-converted-at",
            "converted_at: missing; expected an RFC 3339 time such as 2026-03-01T12:00:00Z",
            "converted_at",
        )
    converted_at = parse_time(row["converted_at"], "converted_at")
    return Conversion(contact_id, converted_at, _value(row.get("value")))


def _value(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # a bad one is reported just below
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EventError("bad-value", f"value: expected a number, got {value!r}", "value")
    return float(value)


def _json_rows(data: bytes) -> Iterator[tuple[int, Mapping[str, Any] | EventError]]:
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            yield number, EventError("bad-json", f"not valid JSON: {error}")
            continue
        if not isinstance(row, dict):
            yield number, EventError("not-an-object", "expected a JSON object")
            continue
        yield number, row


def _csv_rows(data: bytes, path: Path) -> Iterator[tuple[int, Mapping[str, Any] | EventError]]:
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's export often starts with a BOM
    except UnicodeDecodeError as error:
        raise OutcomesError(f"{path}: not UTF-8 text: {error}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or ()]
    missing = [name for name in COLUMNS[:2] if name not in header]
    if missing:
        raise OutcomesError(
            f"{path}: the header row has no {' and no '.join(missing)} column; expected "
            f"columns {', '.join(COLUMNS)} (value optional), got {', '.join(header) or 'none'}"
        )
    reader.fieldnames = header
    for row in reader:
        if any(value for value in row.values() if isinstance(value, str)):
            yield reader.line_num, row


def write_outcomes(conversions: Iterable[Conversion], path: Path) -> int:
    """JSON Lines (gzipped for `.gz`), one conversion a line; the count."""
    count = 0
    with gzip.open(path, "wb") if path.name.endswith(".gz") else path.open("wb") as out:
        for conversion in conversions:
            out.write(orjson.dumps(conversion.to_json(), option=orjson.OPT_APPEND_NEWLINE))
            count += 1
    return count
