"""`leadscore plans fit`: points learned from outcomes, written as a plan to preview and deploy.

1. One read of the events: who is in them, and which types, data values and attribute values
   they hold (`streams.learn.features`).
2. The features measured by the core, each contact as of its cutoff (as `plans evaluate`).
3. A regularised logistic regression on the training contacts (`streams.learn.model`).
4. Its weights scaled to whole points (the strongest factor per unit gets `--max-points`),
   written as a plan: behaviour rules, attribute rules, inactivity rules where quiet matters.
5. That plan and the current plans evaluated on the same held-out test contacts, by replaying
   them through the core: the figures are those of the plan as written, rounding and all.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.backtest.evaluate import (
    Capacity,
    Cutoffs,
    Evaluation,
    PlanEvaluation,
    evaluate_files,
    scores_at_cutoffs,
)
from streams.backtest.evaluate_report import selects, table, times
from streams.backtest.evaluate_report import to_json as evaluation_json
from streams.backtest.metrics import TOP_PCTS
from streams.learn.features import MAX_VALUES, Feature, discover, feature_plans, survey_file
from streams.learn.model import FOLDS, TEST_SHARE, fit_weights, split
from streams.models.outcomes import Outcomes
from streams.models.plan_file import parse_plans
from streams.models.plans import PlanSet
from streams.models.times import format_time

MIN_CONVERSIONS = 100
MAX_POINTS = 100
TOP_PCT = 10.0
"""Without `--capacity` or `--precision`, the threshold selects this top share."""
PLAN_NAME = "fitted"
THRESHOLD_NAME = "sales-ready"


class NotEnoughDataError(ValueError):
    """Too few conversions (or others) to learn from; the message says how many are needed."""


@dataclass(frozen=True, slots=True)
class Factor:
    """A rule of the fitted plan and the evidence for it, on the training contacts."""

    feature: Feature
    points: int
    per_sd: float
    converters_mean: float
    others_mean: float
    converters_share: float
    """Share of converters with the feature (at least once)."""
    others_share: float


@dataclass(frozen=True, slots=True)
class FitResult:
    text: str
    """The plans file, comment header and all."""
    plans: PlanSet
    factors: tuple[Factor, ...]
    """Every rule written, strongest (per standard deviation) first."""
    evaluation: Evaluation
    """The current plans and the fitted one on the test contacts."""
    features: int
    train: int
    test: int
    c: float
    threshold: int
    threshold_reason: str
    skipped_fields: tuple[str, ...]


def fit_plan(
    events: Path,
    outcomes: Outcomes,
    current: Sequence[tuple[str, PlanSet]] = (),
    *,
    given: Sequence[Feature] = (),
    horizon: float = 0.0,
    as_of: float | None = None,
    seed: int = 7,
    max_points: int = MAX_POINTS,
    min_conversions: int = MIN_CONVERSIONS,
    max_values: int = MAX_VALUES,
    capacity: Capacity | None = None,
    precision: float | None = None,
    jobs: int = 1,
    label: str = PLAN_NAME,
    name: str = PLAN_NAME,
) -> FitResult:
    """`label` names the fitted plan's file in the evaluation (the output path); `name` is the
    plan's (a current plan's name makes `plans diff` compare the two as one plan)."""
    census, survey = survey_file(events, max_values)
    _require(
        len(outcomes.conversions.keys() & census.contacts), len(census.contacts), min_conversions
    )
    features = discover(survey, given)
    end = as_of if as_of is not None else census.last
    cutoffs = Cutoffs(outcomes, horizon, end)
    cohort = scores_at_cutoffs(events, feature_plans(features), cutoffs, census, jobs=jobs)
    _require(sum(cohort.converted), len(cohort.contact_ids), min_conversions)
    rows = list(zip(*cohort.scores, strict=True))
    train, test = split(cohort.converted, seed)
    weights = fit_weights([rows[i] for i in train], [cohort.converted[i] for i in train], seed)
    largest = max((abs(w) for w in weights.per_unit), default=0.0)
    if largest == 0:
        raise NotEnoughDataError("no feature tells converters from the others: nothing to fit")
    points = [round(w * max_points / largest) for w in weights.per_unit]
    factors = sorted(
        (
            _factor(feature, points[j], weights.per_sd[j], [rows[i][j] for i in train],
                    [cohort.converted[i] for i in train])
            for j, feature in enumerate(features)
            if points[j]
        ),
        key=lambda factor: -abs(factor.per_sd),
    )  # fmt: skip
    document = _document(factors, name)
    fitted = parse_plans(document, "<fitted>")
    keep = {cohort.contact_ids[i] for i in test}
    evaluation = evaluate_files(
        events,
        [*current, (label, fitted)],
        outcomes,
        horizon=horizon,
        as_of=as_of,
        capacity=capacity,
        precision=precision,
        jobs=jobs,
        keep=keep,
        census=census,
    )
    threshold, reason = _threshold(evaluation.plans[-1], precision)
    document["plans"][0]["thresholds"] = [{"name": THRESHOLD_NAME, "score": threshold}]
    header = _header(events, outcomes, census.events, evaluation, horizon, seed, weights.c,
                     len(train), max_points, reason)  # fmt: skip
    text = header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return FitResult(
        text=text,
        plans=parse_plans(yaml.safe_load(text), "<fitted>"),
        factors=tuple(factors),
        evaluation=evaluation,
        features=len(features),
        train=len(train),
        test=len(test),
        c=weights.c,
        threshold=threshold,
        threshold_reason=reason,
        skipped_fields=tuple(survey.skipped()),
    )


def _require(converters: int, contacts: int, minimum: int) -> None:
    others = contacts - converters
    if converters < minimum or others < minimum:
        raise NotEnoughDataError(
            f"{converters:,} converted and {others:,} other contacts in the events; at least "
            f"{minimum:,} of each are needed to learn points rather than noise "
            "(--min-conversions; Salesforce Einstein asks for 120 conversions). Give a longer "
            "history of events, or outcomes over a longer period."
        )


def _factor(
    feature: Feature, points: int, per_sd: float, values: list[int], converted: list[bool]
) -> Factor:
    mine = [value for value, c in zip(values, converted, strict=True) if c]
    others = [value for value, c in zip(values, converted, strict=True) if not c]
    return Factor(
        feature,
        points,
        per_sd,
        sum(mine) / len(mine) if mine else 0.0,
        sum(others) / len(others) if others else 0.0,
        sum(1 for value in mine if value) / len(mine) if mine else 0.0,
        sum(1 for value in others if value) / len(others) if others else 0.0,
    )


def _document(factors: Sequence[Factor], name: str) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "name": name,
        "description": "points learned from outcomes by leadscore plans fit",
        "thresholds": [],
    }
    for section in ("rules", "attributes", "inactivity"):
        rules = [
            {**factor.feature.rule, "points": factor.points}
            for factor in factors
            if factor.feature.section == section
        ]
        if rules:
            plan[section] = rules
    return {"plans": [plan]}


def _threshold(mine: PlanEvaluation, precision: float | None) -> tuple[int, str]:
    """The capacity's threshold, else the target precision's, else the top share's."""
    pick = mine.capacity
    if pick is not None and pick.stats is not None:
        return pick.stats.score, (
            f"for {pick.capacity}: {pick.alerts_per_week:.1f} alerts a week in the backtest"
        )
    if mine.precision is not None and precision is not None:
        return mine.precision.score, f"for a precision of {precision:.0%} on the test contacts"
    top = next(share for share in mine.top if share.pct == TOP_PCT)
    assert top.score is not None  # the test set is never empty: `_require` saw to it
    return top.score, f"the score of the top {TOP_PCT:g}% of the test contacts"


def _header(
    events: Path,
    outcomes: Outcomes,
    event_count: int,
    evaluation: Evaluation,
    horizon: float,
    seed: int,
    c: float,
    train: int,
    max_points: int,
    threshold_reason: str,
) -> str:
    mine = evaluation.plans[-1]
    others = ", ".join(f"{plan.plan} {_auc(plan.auc)}" for plan in evaluation.plans[:-1])
    lines = [
        f"Fitted by `leadscore plans fit` from {events.name} ({event_count:,} events,"
        f" {evaluation.contacts + train:,} contacts) and {Path(outcomes.origin).name}"
        f" ({len(outcomes.conversions):,} conversions).",
        (
            "Scores read at each conversion"
            if horizon == 0
            else f"Scores read {_duration(horizon)} before each conversion"
        )
        + ("." if evaluation.end is None else f", the others' at {format_time(evaluation.end)}."),
        f"L2 logistic regression (C={c:.3g}, by {FOLDS}-fold cross-validated AUC) on"
        f" {train:,} training contacts; the strongest factor per unit is {max_points} points.",
        f"Test AUC {_auc(mine.auc)} on {evaluation.contacts:,} held-out contacts"
        f" ({TEST_SHARE:.0%}, seed {seed}, {evaluation.converters:,} converted)"
        + (f"; on the same contacts {others}." if others else "."),
        f"Threshold {threshold_reason}.",
    ]
    return "".join(f"# {line}\n" for line in textwrap.wrap(" ".join(lines), 96))


def _auc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _duration(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} days" if days >= 1 else f"{seconds:g} s"


FACTORS_SHOWN = 12


def render_text(result: FitResult, out: Path) -> str:
    """The report: what was written, the top factors with their evidence, the test set."""
    e = result.evaluation
    plan = result.plans.plans[0]
    rules = len(plan.rules) + len(plan.attributes) + len(plan.inactivity)
    lines = [
        f"fitted {result.features:,} features on {result.train:,} training contacts"
        f" (L2, C={result.c:.3g}); wrote {out}: plan {plan.name}, {rules} rules,"
        f" threshold {THRESHOLD_NAME} at {result.threshold:,} ({result.threshold_reason})",
    ]
    if result.skipped_fields:
        lines.append(f"  too many values to learn from: {', '.join(result.skipped_fields)}")
    lines += ["", "top factors (points; on the training contacts, converters against the others)"]
    lines += table(
        ("rule", "measures", "points", "converters", "others"),
        [
            (f.feature.id, f.feature.label, f"{f.points:+,}", *_evidence(f))
            for f in result.factors[:FACTORS_SHOWN]
        ],
        left=2,
    )
    if len(result.factors) > FACTORS_SHOWN:
        lines.append(f"  ... and {len(result.factors) - FACTORS_SHOWN} more rules in {out}")
    lines += [
        "",
        f"test set: {e.contacts:,} held-out contacts, {e.converters:,} converted; every plan"
        " replayed on them (`plans evaluate` gives the full report)",
        *table(
            ("plan", "file", "ROC AUC", *(f"top {pct:g}% lift" for pct in TOP_PCTS[1:])),
            [
                (p.plan, p.file, "-" if p.auc is None else f"{p.auc:.3f}",
                 *(times(t.lift) for t in p.top[1:]))
                for p in e.plans
            ],
            left=2,
        ),
    ]  # fmt: skip
    for p in e.plans:
        pick = p.capacity
        if pick is not None and pick.stats is not None:
            lines.append(
                f"  {p.plan} for {pick.capacity}: threshold {pick.stats.score:,},"
                f" {pick.alerts_per_week:,.1f} alerts a week; {selects(pick.stats)}"
            )
    return "\n".join(lines) + "\n"


def _evidence(factor: Factor) -> tuple[str, str]:
    if factor.feature.kind == "count":
        return (
            f"{factor.converters_mean:.2f} a contact ({factor.converters_share:.0%} any)",
            f"{factor.others_mean:.2f} a contact ({factor.others_share:.0%} any)",
        )
    return f"{factor.converters_share:.0%} of them", f"{factor.others_share:.0%} of them"


def to_json(result: FitResult, out: Path) -> dict[str, Any]:
    return {
        "out": str(out),
        "features": result.features,
        "train_contacts": result.train,
        "test_contacts": result.test,
        "c": result.c,
        "threshold": {
            "name": THRESHOLD_NAME,
            "score": result.threshold,
            "reason": result.threshold_reason,
        },
        "skipped_fields": list(result.skipped_fields),
        "factors": [
            {
                "rule": factor.feature.id,
                "kind": factor.feature.kind,
                "measures": factor.feature.label,
                "points": factor.points,
                "log_odds_per_sd": factor.per_sd,
                "converters_mean": factor.converters_mean,
                "others_mean": factor.others_mean,
                "converters_share": factor.converters_share,
                "others_share": factor.others_share,
            }
            for factor in result.factors
        ],
        "test": evaluation_json(result.evaluation),
    }
