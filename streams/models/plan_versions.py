"""Plan versions: a plans file as one version of the plan set, and the history of versions that a
worker or a backtest scores with.

A version takes over at its `effective_from` in event time (or timer time), not when a worker
happens to read it, so every worker of a group, and a replay, switch each contact at the same
point. The first version of a history is in force from the beginning of time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from itertools import pairwise
from math import inf
from pathlib import Path

from streams.models.errors import EventError
from streams.models.plan_file import (
    PlanError,
    parse_plans,
    read_plans_document,
    read_plans_file,
)
from streams.models.plans import PlanSet
from streams.models.times import format_time, parse_time


class Change(StrEnum):
    """What a new version does to the scores contacts already have."""

    FORWARD = "forward"
    """Awards already given keep their points; the new rules apply from `effective_from` on."""
    RESCORE = "rescore"
    """Scores become what they would be had the new version always been in force."""


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """One plans file, compiled, with its label; its plans carry the label into every output."""

    label: str
    plans: PlanSet
    effective_from: float | None
    """Event time at which it takes over; None: the moment it is installed (`installed_at`)."""
    change: Change
    text: str
    """The file as written, what `plans publish` puts on the plans topic."""

    def installed_at(self, moment: float) -> PlanVersion:
        """This version with `effective_from` defaulted to `moment` (publish or reload time)."""
        if self.effective_from is not None:
            return self
        return replace(self, effective_from=moment)

    def describe(self) -> str:
        since = "" if self.effective_from is None else f" from {format_time(self.effective_from)}"
        return f"version {self.label} ({self.change.value}{since})"


def load_plan_version(path: str | Path) -> PlanVersion:
    """Read, validate and compile a plans file, top-level version keys included."""
    return parse_plan_version(read_plans_file(path), str(path))


def parse_plan_version(text: str, origin: str = "<memory>") -> PlanVersion:
    """A plans file's text to a version, with the same messages as `plans check`."""
    document = read_plans_document(text, origin)
    if isinstance(document, dict) and isinstance(document.get("effective_from"), date | str):
        document = {**document, "effective_from": _yaml_time(document["effective_from"], origin)}
    plans = parse_plans(document, origin)
    effective_from = None
    if "effective_from" in document:
        try:
            effective_from = parse_time(document["effective_from"], "effective_from")
        except EventError as error:
            raise PlanError(f"{origin}: {error}") from None
    return PlanVersion(
        label=plans.version,
        plans=plans,
        effective_from=effective_from,
        change=Change(document.get("change", Change.FORWARD)),
        text=text,
    )


def _yaml_time(written: date | str, origin: str) -> str:
    """YAML reads an unquoted timestamp as a datetime (a date alone as a date): take it if it
    names its offset; a time without one, quoted or not, is refused with the fix."""
    if isinstance(written, str):
        try:
            moment: date = datetime.fromisoformat(written)
        except ValueError:
            return written  # not a time at all: `parse_time` says what is expected
    else:
        moment = written
    if not isinstance(moment, datetime):
        raise PlanError(
            f"{origin}: effective_from: add a time of day and a time zone to {moment.isoformat()},"
            f" e.g. {moment.isoformat()}T00:00:00Z"
        )
    if moment.tzinfo is None:
        raise PlanError(
            f"{origin}: effective_from: add a time zone (e.g. `Z` for UTC) to {moment.isoformat()}"
        )
    return written if isinstance(written, str) else moment.isoformat()


@dataclass(frozen=True, slots=True)
class PlanHistory:
    """Versions in the order they take over; the first is in force from the beginning."""

    versions: tuple[PlanVersion, ...]
    _starts: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.versions:
            raise ValueError("a plan history needs at least one version")
        starts = (
            -inf,
            *(-inf if v.effective_from is None else v.effective_from for v in self.versions[1:]),
        )
        if any(later < earlier for earlier, later in pairwise(starts)):
            raise ValueError("plan versions must take over in the order of their effective_from")
        object.__setattr__(self, "_starts", starts)

    @classmethod
    def single(cls, plans: PlanSet) -> PlanHistory:
        """A history of one version: what a worker or a backtest with one plans file scores with."""
        return cls((PlanVersion(plans.version, plans, None, Change.FORWARD, ""),))

    @property
    def latest(self) -> PlanVersion:
        return self.versions[-1]

    def index_at(self, moment: float) -> int:
        """The index of the version in force at `moment` (a version takes over at its start)."""
        return bisect.bisect_right(self._starts, moment) - 1

    def start(self, index: int) -> float:
        """When version `index` takes over (`-inf` for the first)."""
        return self._starts[index]

    def index_of(self, label: str | None, moment: float = inf) -> int | None:
        """The latest version with this label that took over by `moment` (a contact's clock),
        or None for a label this history does not know.

        A label may come back (v1, v2, then v1 again): a contact switched to a version at or
        after its start, so its clock tells which of the two it is on."""
        for index in range(len(self.versions) - 1, -1, -1):
            if self.versions[index].label == label and self._starts[index] <= moment:
                return index
        return None

    def then(self, version: PlanVersion) -> PlanHistory:
        """This history with `version` added (its `effective_from` must be set and not earlier
        than the latest version's: a version cannot take over in the past of another)."""
        if version.effective_from is None:
            raise ValueError("set the version's effective_from (installed_at) before adding it")
        if version.effective_from < self._starts[-1]:
            raise ValueError(
                f"{version.describe()} takes over before {self.latest.describe()}; "
                "a version must not take over earlier than the one before it"
            )
        return PlanHistory((*self.versions, version))
