"""`leadscore plans evaluate`: scores as of each contact's cutoff, on the backtest's driver."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from streams.backtest.evaluate import (
    Cutoffs,
    evaluate_files,
    parse_capacity,
    parse_precision,
    scores_at_cutoffs,
    take_census,
)
from streams.backtest.parallel import backtest_file
from streams.backtest.simulate import write_jsonl
from streams.cli import main
from streams.models.outcomes import Conversion, Outcomes, load_outcomes
from streams.models.outputs import THRESHOLD_CROSSED
from streams.models.plans import Threshold
from streams.models.times import format_time
from streams.scoring import load_plans
from tests.support import DAY, T0, attributes, event, plans_from

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"
PLANS = plans_from("""
plans:
  - name: visits
    thresholds: [{name: warm, score: 20}]
    rules: [{id: visit, when: {type: page.visited}, points: 10}]
    inactivity: [{id: quiet, after: 7d, points: -5}]
""")


def _history(*, late_event: bool) -> list:
    """c-1 converts on day 25 (cutoff day 15 with a 10-day horizon); c-2 never converts; c-3
    converts on day 22 but has no event before its cutoff on day 12."""
    events = [
        event("page.visited", 0 * DAY, contact="c-1"),
        event("page.visited", 0 * DAY, contact="c-2"),
        event("page.visited", 5 * DAY, contact="c-1"),
        event("page.visited", 10 * DAY, contact="c-2"),
        attributes(20 * DAY, contact="c-3", job_title="cto"),
        event("page.visited", 30 * DAY, contact="c-2"),
    ]
    if late_event:  # after c-1's cutoff: must change nothing in its evaluation
        events.insert(4, event("page.visited", 16 * DAY, contact="c-1"))
    return events


OUTCOMES = Outcomes(
    "won.jsonl",
    {
        "c-1": Conversion("c-1", T0 + 25 * DAY),
        "c-3": Conversion("c-3", T0 + 22 * DAY),
        "c-9": Conversion("c-9", T0 + 22 * DAY),
    },
)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_converter_is_scored_as_of_its_cutoff(tmp_path: Path, jobs: int) -> None:
    scores = {}
    for late in (False, True):
        path = tmp_path / f"events-{late}.jsonl"
        write_jsonl(_history(late_event=late), path)
        census = take_census(path)
        cutoffs = Cutoffs(OUTCOMES, 10 * DAY, census.last)
        cohort = scores_at_cutoffs(path, PLANS, cutoffs, census, jobs=jobs)
        scores[late] = dict(zip(cohort.contact_ids, cohort.scores[0], strict=True))
        assert cohort.converted == (True, False, True)
        assert cohort.unseen == {"c-3"}
    # c-1 by day 15: two visits (20), quiet since day 5 for more than 7 days (-5). Read at the
    # end instead, or with the visit on day 16, it would be 25 or 30. c-2 at the end: three
    # visits, and the penalties of days 7 and 17 (a week after each visit). c-3: never seen.
    assert scores[True] == scores[False] == {"c-1": 15, "c-2": 20, "c-3": 0}


def test_the_report_counts_unknown_and_unseen_converters(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_jsonl(_history(late_event=True), path)
    evaluation = evaluate_files(path, [("p.yaml", PLANS)], OUTCOMES, horizon=10 * DAY)
    assert (evaluation.contacts, evaluation.converters) == (3, 2)
    assert (evaluation.unknown_contacts, evaluation.unseen_converters) == (1, 1)
    assert evaluation.end == T0 + 30 * DAY
    (plan,) = evaluation.plans
    # Scores 15 (converted), 20, 0 (converted): the converters rank below the other: AUC 0.
    assert plan.auc == 0.0
    assert plan.thresholds[0].stats.contacts == 1  # warm at 20: c-2 only


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("evaluate")
    events, outcomes = folder / "events.jsonl.gz", folder / "outcomes.jsonl"
    argv = ["simulate", str(events), "--contacts", "400", "--events", "5000"]
    assert main([*argv, "--seed", "5", "--outcomes", str(outcomes)]) == 0
    return events, outcomes


def test_jobs_two_equals_jobs_one(simulated: tuple[Path, Path]) -> None:
    events, outcomes_path = simulated
    outcomes = load_outcomes(outcomes_path)
    files = [("plans.yaml", load_plans(EXAMPLES))]
    capacity = parse_capacity("20/week")
    one, two = (
        evaluate_files(
            events, files, outcomes, horizon=7 * DAY, capacity=capacity, precision=0.3, jobs=jobs
        )
        for jobs in (1, 2)
    )
    assert one == two
    assert one.converters > 20  # the comparison has something to compare


def test_the_capacity_threshold_sends_no_more_alerts_a_week(simulated: tuple[Path, Path]) -> None:
    events, outcomes_path = simulated
    plans = load_plans(EXAMPLES)
    capacity = parse_capacity("20/week")
    evaluation = evaluate_files(
        events, [("plans.yaml", plans)], load_outcomes(outcomes_path), capacity=capacity
    )
    census = take_census(events)
    assert census.first is not None and census.last is not None
    weeks = (census.last - census.first) / (7 * DAY)
    for plan, found in zip(plans, evaluation.plans, strict=True):
        assert found.capacity is not None and found.capacity.stats is not None
        threshold = found.capacity.stats.score
        alone = replace(plans, plans=(replace(plan, thresholds=(Threshold("t", threshold),)),))
        alerts = backtest_file(events, alone).alerts
        crossed = sum(1 for alert in alerts if alert.type == THRESHOLD_CROSSED)
        assert crossed == found.capacity.alerts
        assert crossed / weeks <= 20
        # and one point lower would send more than the capacity, if it was a candidate
        assert found.capacity.alerts_per_week == pytest.approx(crossed / weeks)


def test_cli_text_json_and_plot(
    simulated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, outcomes = simulated
    base = ["plans", "evaluate", "--plans", str(EXAMPLES), "--outcomes", str(outcomes)]
    base += [str(events), "--horizon", "7d", "--capacity", "20/week", "--jobs", "1"]
    assert main([*base, "--plot", str(tmp_path / "lift.png")]) == 0
    text = capsys.readouterr().out
    assert "Plan lead-score" in text and "ROC AUC 0." in text and "for 20/week: threshold" in text
    assert (tmp_path / "lift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*base, "--json"]) == 0
    document = orjson.loads(capsys.readouterr().out)
    assert [plan["plan"] for plan in document["plans"]] == ["lead-score", "icp-fit"]
    assert document["end"] == format_time(take_census(events).last or 0)
    assert {"auc", "bands", "top", "thresholds", "capacity"} <= document["plans"][0].keys()


def test_cli_refuses_a_bad_capacity_and_a_missing_outcomes_file(
    simulated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, outcomes = simulated
    base = ["plans", "evaluate", "--plans", str(EXAMPLES), str(events)]
    with pytest.raises(SystemExit):
        main([*base, "--outcomes", str(outcomes), "--capacity", "lots"])
    assert "expected alerts per period such as 50/week" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cannot read the outcomes file"):
        main([*base, "--outcomes", str(tmp_path / "none.jsonl")])


@pytest.mark.parametrize(
    ("text", "per_week"),
    [("50/week", 50.0), ("10/day", 70.0), ("120/2w", 60.0), ("300/month", 70.0)],
)
def test_capacity_in_alerts_per_week(text: str, per_week: float) -> None:
    assert parse_capacity(text).per_week == pytest.approx(per_week)


def test_precision_as_a_fraction_or_a_percentage() -> None:
    assert parse_precision("0.3") == parse_precision("30%") == pytest.approx(0.3)
    with pytest.raises(argparse.ArgumentTypeError, match="at most 1"):
        parse_precision("130%")
