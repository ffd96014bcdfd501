"""`leadscore plans evaluate`: does a plan's score predict who converts, without leaking the future?

Each contact's score is read as of its own cutoff: a converter's `converted_at` minus the
horizon ("was it hot a month before it bought?"), everyone else's the common end (`--as-of`,
or the last event). It is the backtest's replay (`backtest_file`, `--jobs` and all) with a
`Cutoff`: a contact's events after its cutoff are not scored, and the contact is advanced to
its cutoff, so the core's own `current_score` of that state is the score sales would have seen
then. The metrics are pure functions (`streams.backtest.metrics`).

Who is evaluated: every contact of the events with a score at its cutoff. A converter with no
event by its cutoff is evaluated with the score of a contact never seen (sales could not have
called it), and counted; an outcome row naming no contact of the events is counted and left
out; an erased contact has no score and is left out.

The threshold for a sales capacity ("50 alerts a week") is found on a second, ordinary
backtest over the whole file, with candidate thresholds added to the plan: the alerts each
would have sent are counted by the core itself, not estimated from scores.
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from streams.backtest.metrics import (
    TOP_PCTS,
    AtThreshold,
    Band,
    Labelled,
    TopShare,
    at_threshold,
    auc,
    bands,
    threshold_for_precision,
    top_share,
)
from streams.backtest.parallel import backtest_file
from streams.backtest.replay import read_lines, valid_events
from streams.models.durations import UNIT_SECONDS, parse_duration
from streams.models.events import TrackingEvent
from streams.models.outcomes import Outcomes
from streams.models.outputs import THRESHOLD_CROSSED
from streams.models.plans import Plan, PlanSet, Threshold
from streams.scoring import ContactState, current_score

WEEK = float(UNIT_SECONDS["w"])
CANDIDATE_SPREAD = tuple(round(1.15**step, 3) for step in range(-10, 13))
"""Where the candidate thresholds for a capacity sit: if each alert were a contact of its own,
a capacity of N alerts over the period would select the N best contacts. The candidates are
the scores of the best N times these factors (a quarter to five times as many), scaled from
all contacts to those evaluated, plus the plan's own thresholds: closely spaced where the
answer is, and no threshold so low that its alerts fill the memory."""
_PERIODS = {"day": float(UNIT_SECONDS["d"]), "week": WEEK, "month": 30 * float(UNIT_SECONDS["d"])}


@dataclass(frozen=True, slots=True)
class Capacity:
    """How many alerts sales can take per period, e.g. 50/week."""

    alerts: float
    per: float
    text: str

    @property
    def per_week(self) -> float:
        return self.alerts * WEEK / self.per


def parse_capacity(text: str) -> Capacity:
    """`50/week`, `10/day`, `200/month` (30 days) or `N/<duration>` such as `120/2w`."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(\S+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected alerts per period such as 50/week, 10/day or 120/2w, got {text!r}"
        )
    alerts, unit = float(match[1]), match[2]
    try:
        per = _PERIODS[unit] if unit in _PERIODS else parse_duration(unit)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{unit!r} is no period: use day, week, month or a duration such as 2w"
        ) from None
    if alerts <= 0:
        raise argparse.ArgumentTypeError(f"the number of alerts must be positive, got {text!r}")
    return Capacity(alerts, per, text.strip())


def parse_precision(text: str) -> float:
    """A precision as a fraction (0.3) or a percentage (30%)."""
    try:
        value = float(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0.3 or 30%, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1 (100%), got {text!r}")
    return value


@dataclass(slots=True)
class Census:
    """The contacts of an events file and its first and last event times (one read of the
    file, with the replay's own validation): who an outcome row may name, and the period
    that alerts per week are counted over."""

    contacts: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None
    events: int = 0


def take_census(path: Path, visit: Callable[[TrackingEvent], None] | None = None) -> Census:
    """The census, and each valid event shown to `visit` on the way (`plans fit` surveys the
    events' values in the same read)."""
    census = Census()
    for _, event in valid_events(read_lines(path), []):
        if visit is not None:
            visit(event)
        census.contacts.add(event.subject)
        census.events += 1
        if census.first is None or event.time < census.first:
            census.first = event.time
        if census.last is None or event.time > census.last:
            census.last = event.time
    return census


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """When each contact's score is read: see the module's docstring."""

    outcomes: Outcomes
    horizon: float
    end: float | None
    """The common end: `--as-of`, or the last event."""

    def __call__(self, contact_id: str) -> float | None:
        conversion = self.outcomes.conversions.get(contact_id)
        if conversion is None:
            return None
        own = conversion.converted_at - self.horizon
        return own if self.end is None else min(own, self.end)


@dataclass(frozen=True, slots=True)
class Cohort:
    """The contacts evaluated, sorted by id, with their scores in each plan at their cutoff."""

    contact_ids: tuple[str, ...]
    converted: tuple[bool, ...]
    scores: tuple[tuple[int, ...], ...]
    """Per plan (in plan order), the contacts' scores."""
    unseen: frozenset[str]
    """Converters with no event by their cutoff (scored as a contact never seen)."""

    def labelled(self, plan_index: int, keep: set[str] | None = None) -> Labelled:
        if keep is None:
            return Labelled(self.scores[plan_index], self.converted)
        chosen = [i for i, contact in enumerate(self.contact_ids) if contact in keep]
        return Labelled(
            [self.scores[plan_index][i] for i in chosen], [self.converted[i] for i in chosen]
        )


def scores_at_cutoffs(
    events: Path,
    plans: PlanSet,
    cutoffs: Cutoffs,
    census: Census,
    *,
    jobs: int = 1,
) -> Cohort:
    """Every plan's score for every contact of the events, each as of its own cutoff."""
    result = backtest_file(events, plans, cutoffs.end, jobs=jobs, cutoff=cutoffs)
    rows = dict(result.scores)
    converters = cutoffs.outcomes.conversions.keys() & census.contacts
    unseen = converters - rows.keys()
    never_seen = [(contact_id, ContactState(contact_id)) for contact_id in sorted(unseen)]
    rows.update(
        (contact_id, tuple(current_score(plan, state) for plan in plans))
        for contact_id, state in never_seen
    )
    ids = tuple(sorted(rows))
    return Cohort(
        ids,
        tuple(contact_id in converters for contact_id in ids),
        tuple(
            tuple(rows[contact_id][index] for contact_id in ids)
            for index in range(len(plans.active))
        ),
        frozenset(unseen),
    )


@dataclass(frozen=True, slots=True)
class NamedThreshold:
    name: str
    stats: AtThreshold


@dataclass(frozen=True, slots=True)
class CapacityPick:
    """The lowest candidate threshold whose alerts in the backtest (and every higher one's) fit
    the capacity."""

    capacity: str
    per_week: float
    stats: AtThreshold | None
    """At cutoff: whom the threshold selects (None: no candidate fits)."""
    alerts: int
    alerts_per_week: float


@dataclass(frozen=True, slots=True)
class PlanEvaluation:
    plan: str
    file: str
    contacts: int
    converters: int
    base_rate: float | None
    auc: float | None
    bands: tuple[Band, ...]
    top: tuple[TopShare, ...]
    thresholds: tuple[NamedThreshold, ...]
    capacity: CapacityPick | None
    precision_target: float | None
    precision: AtThreshold | None
    gains: tuple[TopShare, ...] = field(repr=False)
    """Capture at every 5% of contacts, for the plot."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    events: str
    outcomes: str
    conversions: int
    rejected_rows: int
    unknown_contacts: int
    horizon: float
    as_of: float | None
    end: float | None
    contacts: int
    converters: int
    unseen_converters: int
    plans: tuple[PlanEvaluation, ...]
    rejected_sample: tuple[str, ...] = ()


def evaluate_plan(
    plan: Plan,
    file: str,
    data: Labelled,
    *,
    capacity: CapacityPick | None = None,
    precision: float | None = None,
) -> PlanEvaluation:
    """The figures of one plan on labelled scores (pure: the replays are done)."""
    return PlanEvaluation(
        plan=plan.name,
        file=file,
        contacts=data.contacts,
        converters=data.converters,
        base_rate=data.base_rate,
        auc=auc(data),
        bands=tuple(bands(data)) if data.contacts else (),
        top=tuple(top_share(data, pct) for pct in TOP_PCTS) if data.contacts else (),
        thresholds=tuple(
            NamedThreshold(threshold.name, at_threshold(data, threshold.score))
            for threshold in plan.thresholds
        ),
        capacity=capacity,
        precision_target=precision,
        precision=None if precision is None else threshold_for_precision(data, precision),
        gains=tuple(top_share(data, pct) for pct in range(5, 101, 5)) if data.contacts else (),
    )


def candidate_thresholds(plan: Plan, scores: Sequence[int], selected: float) -> list[int]:
    """Thresholds to count the alerts of, for a capacity that would select `selected` of the
    contacts whose `scores` are given (see `CANDIDATE_SPREAD`)."""
    ordered = sorted(scores, reverse=True)
    picks = {
        ordered[min(len(ordered) - 1, max(0, math.ceil(selected * factor) - 1))]
        for factor in CANDIDATE_SPREAD
        if ordered
    }
    return sorted(picks | {threshold.score for threshold in plan.thresholds})


def alerts_by_threshold(
    events: Path,
    plans: PlanSet,
    candidates: Sequence[Sequence[int]],
    until: float | None,
    jobs: int,
) -> list[Counter[int]]:
    """Per plan, the threshold-crossed alerts each candidate score would have sent over the
    whole file: a backtest of the plans with the candidates as their thresholds."""
    trial = PlanSet(
        tuple(
            replace(plan, thresholds=tuple(Threshold(f"at-{score}", score) for score in scores))
            for plan, scores in zip(plans.active, candidates, strict=True)
        ),
        plans.origin,
        plans.version,
    )
    result = backtest_file(events, trial, until, jobs=jobs)
    counts: dict[str, Counter[int]] = {plan.name: Counter() for plan in trial}
    for alert in result.alerts:
        if alert.type == THRESHOLD_CROSSED:
            counts[alert.data["plan"]][int(alert.data["threshold"].removeprefix("at-"))] += 1
    return [counts[plan.name] for plan in trial]


def pick_for_capacity(
    capacity: Capacity,
    alerts: Counter[int],
    candidates: Sequence[int],
    weeks: float,
    data: Labelled,
) -> CapacityPick:
    """The lowest candidate whose alerts per week fit, and every higher one's: the most contacts
    sales can call. Going down from the highest, so that a threshold at the lowest score, which
    everyone is at from the start and so never crosses (no alerts at all), is not taken."""
    pick: CapacityPick | None = None
    for score in sorted(candidates, reverse=True):
        per_week = alerts[score] / weeks
        if per_week > capacity.per_week:
            break
        pick = CapacityPick(
            capacity.text, capacity.per_week, at_threshold(data, score), alerts[score], per_week
        )
    return pick or CapacityPick(capacity.text, capacity.per_week, None, 0, 0.0)


def evaluate_files(
    events: Path,
    plan_files: Sequence[tuple[str, PlanSet]],
    outcomes: Outcomes,
    *,
    horizon: float = 0.0,
    as_of: float | None = None,
    capacity: Capacity | None = None,
    precision: float | None = None,
    jobs: int = 1,
    keep: set[str] | None = None,
    census: Census | None = None,
) -> Evaluation:
    """Each plan of each file on the same contacts (only those in `keep`, if given)."""
    census = census if census is not None else take_census(events)
    end = as_of if as_of is not None else census.last
    cutoffs = Cutoffs(outcomes, horizon, end)
    evaluations: list[PlanEvaluation] = []
    contacts = converters = unseen = 0
    for file, plans in plan_files:
        cohort = scores_at_cutoffs(events, plans, cutoffs, census, jobs=jobs)
        labelled = [cohort.labelled(index, keep) for index in range(len(plans.active))]
        picks: list[CapacityPick | None] = [None] * len(labelled)
        if capacity is not None and labelled:
            weeks = _weeks(census, end)
            share = capacity.per_week * weeks / max(1, len(census.contacts))
            candidates = [  # from every contact's score: the alerts are everyone's
                candidate_thresholds(plan, scores, share * len(scores))
                for plan, scores in zip(plans, cohort.scores, strict=True)
            ]
            counts = alerts_by_threshold(events, plans, candidates, as_of, jobs)
            picks = [
                pick_for_capacity(capacity, count, scores, weeks, data)
                for count, scores, data in zip(counts, candidates, labelled, strict=True)
            ]
        evaluations.extend(
            evaluate_plan(plan, file, data, capacity=pick, precision=precision)
            for plan, data, pick in zip(plans, labelled, picks, strict=True)
        )
        if labelled:
            contacts, converters = labelled[0].contacts, labelled[0].converters
        unseen = len(cohort.unseen if keep is None else cohort.unseen & keep)
    return Evaluation(
        events=str(events),
        outcomes=outcomes.origin,
        conversions=len(outcomes.conversions),
        rejected_rows=len(outcomes.rejected),
        unknown_contacts=outcomes.unknown(census.contacts),
        horizon=horizon,
        as_of=as_of,
        end=end,
        contacts=contacts,
        converters=converters,
        unseen_converters=unseen,
        plans=tuple(evaluations),
        rejected_sample=tuple(f"line {row.line}: {row.message}" for row in outcomes.rejected[:5]),
    )


def _weeks(census: Census, end: float | None) -> float:
    """The period the alerts were sent over, in weeks (a day at least)."""
    if census.first is None or end is None:
        return 1.0
    return max(end - census.first, float(UNIT_SECONDS["d"])) / WEEK
