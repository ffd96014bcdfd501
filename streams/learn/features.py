"""Features a plan can express, measured by the scoring core itself.

Every feature is a plan rule: a behaviour rule counting an event type, or the events whose data
field has a value (seen ones under a cardinality cap, or a matcher the user gives with
`--feature`); an attribute rule for an attribute value; an inactivity rule for "quiet for N
days". Each is compiled into a plan of its own with that one rule at 1 point, from a plans
document through the plans file's own parser, and the contacts are replayed through them to
their cutoffs: the score of a feature plan IS the feature. So a plan made of the same rules
with whole points scores exactly the weighted sum the model was fitted on, and there is no
second implementation of rule matching, limits or inactivity to drift from the core.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from streams.backtest.evaluate import Census, take_census
from streams.models.events import CONTACT_UPDATED, NON_ACTIVITY_TYPES, TrackingEvent
from streams.models.matchers import OPERATORS, fold
from streams.models.plan_file import PlanError, parse_plans
from streams.models.plans import PlanSet

MAX_VALUES = 20
"""Distinct values of a data field or attribute beyond which it gives no features (an id, a
timestamp or a free text field would otherwise give one rule per contact)."""
MIN_EVENTS = 10
"""Events a value needs to become a feature (for an attribute value: updates that set it)."""
QUIET_DAYS = (7, 14, 30, 60)
"""Inactivity features: no activity for this many days at the cutoff."""

Section = Literal["rules", "attributes", "inactivity"]


@dataclass(frozen=True, slots=True)
class Feature:
    """A rule without its points: `rule` is its plans-file form, `id` and all."""

    section: Section
    rule: Mapping[str, Any]
    label: str
    """What it measures, for the report."""

    @property
    def id(self) -> str:
        return str(self.rule["id"])

    @property
    def kind(self) -> str:
        return {"rules": "count", "attributes": "attribute", "inactivity": "quiet"}[self.section]


@dataclass(slots=True)
class _Values:
    """The distinct values of a field with how often each was seen (dropped past the cap)."""

    counts: Counter[Any]
    original: dict[Any, Any]
    cap: int = MAX_VALUES
    overflow: bool = False

    def add(self, value: Any) -> None:
        if self.overflow:
            return
        key = fold(value)  # values the plans' matchers take for equal are one feature
        if key not in self.counts and len(self.counts) >= self.cap:
            self.overflow = True
            self.counts.clear()
            return
        self.counts[key] += 1
        self.original.setdefault(key, value)


class Survey:
    """What the events hold: activity types, their data values, attribute values."""

    def __init__(self, max_values: int = MAX_VALUES) -> None:
        self.max_values = max_values
        self.types: Counter[str] = Counter()
        self.data: dict[tuple[str, str], _Values] = {}
        self.attributes: dict[str, _Values] = {}

    def __call__(self, event: TrackingEvent) -> None:
        if event.type == CONTACT_UPDATED:
            for name, value in (event.data.get("attributes") or {}).items():
                if _scalar(value):
                    _values(self.attributes, name, self.max_values).add(value)
            return
        if event.type in NON_ACTIVITY_TYPES:
            return
        self.types[event.type] += 1
        for name, value in event.data.items():
            if _scalar(value):
                _values(self.data, (event.type, name), self.max_values).add(value)

    def skipped(self) -> list[str]:
        """The fields with too many values to give features."""
        return [f"{kind} {name}" for (kind, name), v in self.data.items() if v.overflow] + [
            f"attribute {name}" for name, v in self.attributes.items() if v.overflow
        ]


_K = TypeVar("_K")


def _values(table: dict[_K, _Values], key: _K, cap: int) -> _Values:
    values = table.get(key)
    if values is None:
        values = table[key] = _Values(Counter(), {}, cap)
    return values


def survey_file(path: Path, max_values: int = MAX_VALUES) -> tuple[Census, Survey]:
    survey = Survey(max_values)
    return take_census(path, survey), survey


def parse_feature(text: str) -> Feature:
    """`--feature 'page.visited url glob */pricing*'`: TYPE FIELD OPERATOR VALUE, counting the
    events of the type whose data field matches (`in` takes comma-separated values)."""
    parts = text.split(maxsplit=3)
    if len(parts) != 4 or parts[2] not in OPERATORS or parts[2] == "exists":
        operators = ", ".join(op for op in OPERATORS if op != "exists")
        raise PlanError(
            f"--feature {text!r}: expected TYPE FIELD OPERATOR VALUE, e.g. "
            f"'page.visited url glob */pricing*', with OPERATOR one of {operators}"
        )
    kind, name, operator, raw = parts
    value: Any = raw
    if operator in ("gte", "lte"):
        try:
            value = float(raw)
        except ValueError:
            raise PlanError(f"--feature {text!r}: {operator} needs a number, got {raw!r}") from None
    elif operator == "in":
        value = [item.strip() for item in raw.split(",")]
    rule = {
        "id": _slug(f"{kind}.{name}.{operator}.{raw}"),
        "when": {"type": kind, "data": {name: {operator: value}}},
    }
    return Feature("rules", rule, f"{kind} with {name} {operator} {raw}")


def discover(
    survey: Survey, given: Sequence[Feature] = (), quiet_days: Iterable[int] = QUIET_DAYS
) -> list[Feature]:
    """The features: the user's, then a count per activity type, per frequent data value and
    per frequent attribute value, then the quiet periods; ids unique."""
    features = list(given)
    rule: dict[str, Any]
    for kind in sorted(survey.types):
        if survey.types[kind] >= MIN_EVENTS:
            features.append(
                Feature("rules", {"id": kind, "when": {"type": kind}}, f"{kind} events")
            )
    for (kind, name), values in sorted(survey.data.items()):
        for key, count in sorted(values.counts.items(), key=_by_text):
            value = values.original[key]
            if count >= MIN_EVENTS:
                rule = {
                    "id": f"{kind}.{name}.{_slug(_short(value))}",
                    "when": {"type": kind, "data": {name: value}},
                }
                features.append(Feature("rules", rule, f"{kind} with {name} {value}"))
    for name, values in sorted(survey.attributes.items()):
        for key, count in sorted(values.counts.items(), key=_by_text):
            value = values.original[key]
            if count >= MIN_EVENTS:
                rule = {"id": f"{name}.{_slug(_short(value))}", "attribute": name, "equals": value}
                features.append(Feature("attributes", rule, f"{name} is {value}"))
    for days in quiet_days:
        rule = {"id": f"quiet-{days}d", "after": f"{days}d", "revert_on_activity": True}
        features.append(Feature("inactivity", rule, f"no activity for {days} days"))
    return _unique(features)


def feature_plans(features: Sequence[Feature]) -> PlanSet:
    """One plan per feature, its rule at 1 point: the core's score of it is the feature."""
    return parse_plans(
        {
            "plans": [
                {"name": feature.id, feature.section: [{**feature.rule, "points": 1}]}
                for feature in features
            ]
        },
        "<features>",
    )


def _unique(features: list[Feature]) -> list[Feature]:
    seen: set[str] = set()
    result = []
    for feature in features:
        base = identifier = _slug(feature.id)
        number = 1
        while identifier in seen:
            number += 1
            identifier = f"{base}-{number}"
        seen.add(identifier)
        result.append(Feature(feature.section, {**feature.rule, "id": identifier}, feature.label))
    return result


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, bool, int, float)) and value != ""


def _by_text(item: tuple[Any, int]) -> str:
    return str(item[0])


def _short(value: Any) -> str:
    """A URL without its scheme and host, which every URL of a site shares."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"^[a-z][a-z0-9+.-]*://[^/]*", "", text) or text


_LETTERS = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "đ": "d", "Đ": "D"})
"""Latin letters that Unicode does not decompose into a base letter and a mark."""


def _slug(text: str) -> str:
    """An identifier a plans file accepts (ASCII letters, digits, `_`, `.`, `-`): accents go,
    so `Kraków` is `Krakow`."""
    ascii_text = unicodedata.normalize("NFKD", text.translate(_LETTERS))
    ascii_text = ascii_text.encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", ascii_text)
    slug = re.sub(r"([._-])[._-]+", r"\1", slug).strip("-._")[:60].strip("-._")
    return slug or "feature"
