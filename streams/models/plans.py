"""Scoring plans as the core uses them: validated, compiled, immutable.

`streams.models.plan_file` builds these from YAML; nothing here parses text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.models.events import NON_ACTIVITY_TYPES, TrackingEvent
from streams.models.matchers import Matcher, lookup


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a rule reacts to: a type set (None = any activity) and data conditions."""

    types: frozenset[str] | None
    data: tuple[tuple[str, Matcher], ...] = ()

    def matches(self, event: TrackingEvent) -> bool:
        if self.types is None:
            if event.type in NON_ACTIVITY_TYPES:
                return False
        elif event.type not in self.types:
            return False
        return all(matcher.matches(lookup(event.data, path)) for path, matcher in self.data)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` awards in a rolling window of `per` seconds of event time (None = ever)."""

    count: int
    per: float | None


@dataclass(frozen=True, slots=True)
class BehaviourRule:
    """Points (or a reset) for something the contact did."""

    id: str
    when: EventFilter
    points: int
    reset: bool
    limit: Limit | None
    expires: float | None


@dataclass(frozen=True, slots=True)
class AttributeRule:
    """Points while the contact's current attributes match: who the contact is, not what it did."""

    id: str
    attribute: str
    matcher: Matcher
    points: int

    def points_for(self, attributes: Mapping[str, Any]) -> int:
        return self.points if self.matcher.matches(lookup(attributes, self.attribute)) else 0


@dataclass(frozen=True, slots=True)
class InactivityRule:
    """Points (or a reset) when no event matching `of` happened for `after` seconds."""

    id: str
    after: float
    of: EventFilter
    points: int
    reset: bool
    revert_on_activity: bool


@dataclass(frozen=True, slots=True)
class Threshold:
    name: str
    score: int


@dataclass(frozen=True, slots=True)
class Plan:
    """One independent score per contact; rule ids are unique across the plan's rule kinds."""

    name: str
    active: bool
    rules: tuple[BehaviourRule, ...]
    attributes: tuple[AttributeRule, ...]
    inactivity: tuple[InactivityRule, ...]
    thresholds: tuple[Threshold, ...]
    minimum: int | None = None
    maximum: int | None = None
    source: str = field(init=False)
    rule_ids: tuple[str, ...] = field(init=False)
    _rules_by_type: Mapping[str, tuple[BehaviourRule, ...]] = field(init=False, repr=False)
    _any_type_rules: tuple[BehaviourRule, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", f"/leadscore/plans/{self.name}")
        every_rule: tuple[BehaviourRule | AttributeRule | InactivityRule, ...] = (
            *self.rules,
            *self.attributes,
            *self.inactivity,
        )
        object.__setattr__(self, "rule_ids", tuple(rule.id for rule in every_rule))
        any_type = tuple(rule for rule in self.rules if rule.when.types is None)
        named = {kind for rule in self.rules for kind in rule.when.types or ()}
        by_type = {
            kind: tuple(
                rule for rule in self.rules if rule.when.types is None or kind in rule.when.types
            )
            for kind in named
        }
        object.__setattr__(self, "_rules_by_type", by_type)
        object.__setattr__(self, "_any_type_rules", any_type)

    def rules_for(self, event_type: str) -> tuple[BehaviourRule, ...]:
        """The behaviour rules that may match this type, in plan order (a lookup, not a scan)."""
        return self._rules_by_type.get(event_type, self._any_type_rules)

    def clamp(self, raw: int) -> int:
        if self.minimum is not None and raw < self.minimum:
            return self.minimum
        if self.maximum is not None and raw > self.maximum:
            return self.maximum
        return raw


@dataclass(frozen=True, slots=True)
class PlanSet:
    """The plans a worker or backtest runs; only active plans score."""

    plans: tuple[Plan, ...]
    origin: str = "<memory>"
    active: tuple[Plan, ...] = field(init=False)
    active_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        active = tuple(plan for plan in self.plans if plan.active)
        object.__setattr__(self, "active", active)
        object.__setattr__(self, "active_names", frozenset(plan.name for plan in active))

    def __iter__(self) -> Iterator[Plan]:
        return iter(self.active)

    def get(self, name: str) -> Plan | None:
        return next((plan for plan in self.plans if plan.name == name), None)
