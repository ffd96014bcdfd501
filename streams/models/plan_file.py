"""Loading a plans YAML file: schema validation, then the checks a schema cannot express.

Every failure is one `PlanError` whose message names the file, the path inside it
(`plans[1].rules[3].limit.per`) and what is expected, because the person reading it is a
marketer or an operator looking at a failed start, not at a stack trace.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import yaml
from jsonschema.exceptions import ValidationError, best_match

from streams.models.durations import parse_duration
from streams.models.matchers import OPERATORS, Matcher
from streams.models.plans import (
    AttributeRule,
    BehaviourRule,
    EventFilter,
    InactivityRule,
    Limit,
    Plan,
    PlanSet,
    Threshold,
)
from streams.models.schemas import load_schema


class PlanError(ValueError):
    """An invalid plans file; the message is meant to be shown as it is."""


def load_plans(path: str | Path) -> PlanSet:
    """Read, validate and compile a plans file."""
    return parse_plans(read_plans_document(read_plans_file(path), str(path)), str(path))


def read_plans_file(path: str | Path) -> str:
    """A plans file's text, or a `PlanError` saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PlanError(f"{path}: cannot read the plans file: {error.strerror}") from None


def read_plans_document(text: str, origin: str) -> Any:
    """The YAML document of a plans file, or a `PlanError` naming the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PlanError(f"{origin}: {where}not valid YAML: {problem}") from None


def parse_plans(document: Any, origin: str = "<memory>") -> PlanSet:
    """Validate a parsed document against `schemas/plans.schema.json` and compile it."""
    validator = jsonschema.Draft202012Validator(load_schema("plans"))
    error = best_match(validator.iter_errors(document))
    if error is not None:
        raise PlanError(f"{origin}: {_describe(error)}")
    plans = [_plan(raw, f"plans[{index}]", origin) for index, raw in enumerate(document["plans"])]
    _require_unique(
        ((plan.name, f"plans[{index}].name") for index, plan in enumerate(plans)),
        "plan name",
        origin,
    )
    label = document.get("version") or content_label(document)
    stamped = tuple(replace(plan, version=label) for plan in plans)
    return PlanSet(plans=stamped, origin=origin, version=label)


def content_label(document: Mapping[str, Any]) -> str:
    """A short hash of what the file says (not of its spacing or comments): a version's
    default label."""
    canonical = orjson.dumps(
        {key: value for key, value in document.items() if key != "version"},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()[:12]


def format_path(parts: Iterable[str | int]) -> str:
    """`["plans", 1, "rules"]` -> `plans[1].rules`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def _describe(error: ValidationError) -> str:
    where = format_path(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    expected = schema.get("description", "")
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return f"{where}: missing required field {missing[0]!r}; expected {expected}"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {})))
        instance = error.instance if isinstance(error.instance, Mapping) else {}
        extra = sorted(set(instance) - set(schema.get("properties", {})))
        return f"{where}: unknown field {', '.join(map(repr, extra))}; allowed: {allowed}"
    hint = ""
    if isinstance(error.instance, bool) and schema.get("type") == "string":
        hint = " (YAML reads yes/no/on/off as booleans: put the value in quotes)"
    return f"{where}: expected {expected or error.message}, got {error.instance!r}{hint}"


def _require_unique(items: Iterable[tuple[str, str]], what: str, origin: str) -> None:
    seen: set[str] = set()
    for value, where in items:
        if value in seen:
            raise PlanError(f"{origin}: {where}: duplicate {what} {value!r}; each must be unique")
        seen.add(value)


def _points_or_reset(raw: Mapping[str, Any], where: str, origin: str) -> tuple[int, bool]:
    has_points, reset = "points" in raw, bool(raw.get("reset", False))
    if has_points == reset:
        raise PlanError(
            f"{origin}: {where}: set exactly one of `points: <number>` or `reset: true`"
        )
    return int(raw.get("points", 0)), reset


def _matcher(spec: Any, where: str, origin: str) -> Matcher:
    try:
        return Matcher.compile(spec)
    except re.error as error:
        raise PlanError(
            f"{origin}: {where}.regex: not a valid regular expression: {error}"
        ) from None


def _event_filter(raw: Mapping[str, Any] | None, where: str, origin: str) -> EventFilter:
    if raw is None:
        return EventFilter(types=None)
    kind = raw.get("type")
    types = None if kind is None else frozenset([kind] if isinstance(kind, str) else kind)
    data = tuple(
        (path, _matcher(spec, f"{where}.data.{path}", origin))
        for path, spec in raw.get("data", {}).items()
    )
    return EventFilter(types=types, data=data)


def _behaviour_rule(raw: Mapping[str, Any], where: str, origin: str) -> BehaviourRule:
    points, reset = _points_or_reset(raw, where, origin)
    if reset and ("expires" in raw or "limit" in raw):
        raise PlanError(f"{origin}: {where}: `expires` and `limit` apply to points, not to a reset")
    limit = raw.get("limit")
    return BehaviourRule(
        id=raw["id"],
        when=_event_filter(raw["when"], f"{where}.when", origin),
        points=points,
        reset=reset,
        limit=None
        if limit is None
        else Limit(limit["count"], parse_duration(limit["per"]) if "per" in limit else None),
        expires=parse_duration(raw["expires"]) if "expires" in raw else None,
    )


def _attribute_rule(raw: Mapping[str, Any], where: str, origin: str) -> AttributeRule:
    operators = {name: raw[name] for name in OPERATORS if name in raw}
    if not operators:
        raise PlanError(
            f"{origin}: {where}: add a condition on the attribute, one of {', '.join(OPERATORS)}"
        )
    return AttributeRule(
        id=raw["id"],
        attribute=raw["attribute"],
        matcher=_matcher(operators, where, origin),
        points=raw["points"],
    )


def _inactivity_rule(raw: Mapping[str, Any], where: str, origin: str) -> InactivityRule:
    points, reset = _points_or_reset(raw, where, origin)
    revert = bool(raw.get("revert_on_activity", False))
    if reset and revert:
        raise PlanError(f"{origin}: {where}.revert_on_activity: a reset cannot be taken back")
    return InactivityRule(
        id=raw["id"],
        after=parse_duration(raw["after"]),
        of=_event_filter(raw.get("of"), f"{where}.of", origin),
        points=points,
        reset=reset,
        revert_on_activity=revert,
    )


def _plan(raw: Mapping[str, Any], where: str, origin: str) -> Plan:
    def each(section: str) -> Sequence[tuple[Mapping[str, Any], str]]:
        return [(item, f"{where}.{section}[{i}]") for i, item in enumerate(raw.get(section, []))]

    rules = tuple(_behaviour_rule(item, at, origin) for item, at in each("rules"))
    attributes = tuple(_attribute_rule(item, at, origin) for item, at in each("attributes"))
    inactivity = tuple(_inactivity_rule(item, at, origin) for item, at in each("inactivity"))
    _require_unique(
        (
            (item["id"], f"{at}.id")
            for section in ("rules", "attributes", "inactivity")
            for item, at in each(section)
        ),
        "rule id",
        origin,
    )
    _require_unique(
        ((item["name"], f"{at}.name") for item, at in each("thresholds")), "threshold name", origin
    )
    minimum, maximum = raw.get("min"), raw.get("max")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise PlanError(f"{origin}: {where}.min: must not exceed max ({minimum} > {maximum})")
    thresholds = sorted(
        (Threshold(item["name"], item["score"]) for item, _ in each("thresholds")),
        key=lambda threshold: threshold.score,
    )
    return Plan(
        name=raw["name"],
        active=raw.get("active", True),
        rules=rules,
        attributes=attributes,
        inactivity=inactivity,
        thresholds=tuple(thresholds),
        minimum=minimum,
        maximum=maximum,
    )
