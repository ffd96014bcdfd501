"""Scoring plans as the core uses them: validated, compiled, immutable.

`streams.models.plan_file` builds these from YAML; nothing here parses text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streams.models.events import CONTACT_UPDATED, NON_ACTIVITY_TYPES, TrackingEvent
from streams.models.matchers import Matcher, lookup


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a rule reacts to: a type set (None = any activity) and data conditions."""

    types: frozenset[str] | None
    data: tuple[tuple[str, Matcher], ...] = ()
    _paths: tuple[tuple[tuple[str, ...], Matcher], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        paths = tuple((tuple(path.split(".")), matcher) for path, matcher in self.data)
        object.__setattr__(self, "_paths", paths)

    def matches(self, event: TrackingEvent) -> bool:
        if self.types is None:
            if event.type in NON_ACTIVITY_TYPES:
                return False
        elif event.type not in self.types:
            return False
        return self.matches_data(event)

    def accepts_type(self, event_type: str) -> bool:
        """Whether an event of this type can match, whatever its data."""
        if self.types is None:
            return event_type not in NON_ACTIVITY_TYPES
        return event_type in self.types

    def matches_data(self, event: TrackingEvent) -> bool:
        """The data conditions alone, for a caller that already checked the type."""
        data = event.data
        for path, matcher in self._paths:
            if not matcher.matches(lookup(data, path)):
                break
        else:
            return True
        return False


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
    _path: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_path", tuple(self.attribute.split(".")))

    def points_for(self, attributes: Mapping[str, Any]) -> int:
        return self.points if self.matcher.matches(lookup(attributes, self._path)) else 0


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
    version: str = ""
    """The label of the plan version it belongs to, carried into its outputs."""
    source: str = field(init=False)
    rule_ids: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", f"/leadscore/plans/{self.name}")
        every_rule: tuple[BehaviourRule | AttributeRule | InactivityRule, ...] = (
            *self.rules,
            *self.attributes,
            *self.inactivity,
        )
        object.__setattr__(self, "rule_ids", tuple(rule.id for rule in every_rule))

    def clamp(self, raw: int) -> int:
        if self.minimum is not None and raw < self.minimum:
            return self.minimum
        if self.maximum is not None and raw > self.maximum:
            return self.maximum
        return raw


class Reaction(NamedTuple):
    """What one plan may do with an event of one type: its behaviour rules and inactivity
    rules that accept the type (their data conditions still to check), and whether the
    event can change the plan's attribute points."""

    plan: Plan
    rules: tuple[BehaviourRule, ...]
    inactivity: tuple[InactivityRule, ...]
    attributes: bool


@dataclass(frozen=True, slots=True)
class PlanSet:
    """The plans a worker or backtest runs; only active plans score."""

    plans: tuple[Plan, ...]
    origin: str = "<memory>"
    version: str = ""
    active: tuple[Plan, ...] = field(init=False)
    active_names: frozenset[str] = field(init=False)
    # A dict, not a Mapping: the compiled core looks it up in C, not through `.get`.
    _reactions: dict[str, tuple[Reaction, ...]] = field(init=False, repr=False)
    _other_reactions: tuple[Reaction, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        active = tuple(plan for plan in self.plans if plan.active)
        object.__setattr__(self, "active", active)
        object.__setattr__(self, "active_names", frozenset(plan.name for plan in active))
        named = {
            kind
            for plan in active
            for event_filter in (*(r.when for r in plan.rules), *(r.of for r in plan.inactivity))
            for kind in event_filter.types or ()
        }
        reactions = {kind: self._compile(kind) for kind in named | NON_ACTIVITY_TYPES}
        object.__setattr__(self, "_reactions", reactions)
        # Every type no rule names reacts alike: only the rules without a type see it.
        object.__setattr__(self, "_other_reactions", self._compile(None))

    def _compile(self, event_type: str | None) -> tuple[Reaction, ...]:
        """The plans, in order, that may react to `event_type` (None: a type no rule names)."""

        def accepts(event_filter: EventFilter) -> bool:
            if event_type is None:
                return event_filter.types is None
            return event_filter.accepts_type(event_type)

        compiled = []
        for plan in self.active:
            reaction = Reaction(
                plan,
                tuple(rule for rule in plan.rules if accepts(rule.when)),
                tuple(rule for rule in plan.inactivity if accepts(rule.of)),
                event_type == CONTACT_UPDATED and bool(plan.attributes),
            )
            if reaction.rules or reaction.inactivity or reaction.attributes:
                compiled.append(reaction)
        return tuple(compiled)

    def reactions(self, event_type: str) -> tuple[Reaction, ...]:
        """The plans that may react to an event of this type: a lookup, and the others are
        skipped without a call (most events concern one plan's rules, or none)."""
        return self._reactions.get(event_type, self._other_reactions)

    def __iter__(self) -> Iterator[Plan]:
        return iter(self.active)

    def get(self, name: str) -> Plan | None:
        return next((plan for plan in self.plans if plan.name == name), None)
