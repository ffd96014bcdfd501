"""Features are plan rules, measured by the core: a feature plan's score is the feature."""

from __future__ import annotations

import pytest

from streams.learn.features import Survey, discover, feature_plans, parse_feature
from streams.models.plan_file import PlanError
from streams.scoring import current_score
from tests.support import DAY, attributes, event, run, run_until

PRICING = "https://example.com/pricing"


def _survey(events: list, max_values: int = 20) -> Survey:
    survey = Survey(max_values)
    for item in events:
        survey(item)
    return survey


def test_discover_counts_types_frequent_values_attributes_and_quiet_periods() -> None:
    events = [event("page.visited", i, {"url": PRICING, "session": f"s-{i}"}) for i in range(12)]
    events += [attributes(i, contact=f"c-{i}", city="Kraków") for i in range(10)]
    events += [attributes(20, contact="c-x", city="Tarnów")]  # too rare to learn from
    survey = _survey(events, max_values=5)
    ids = [feature.id for feature in discover(survey, quiet_days=(30,))]
    # `session` has a value per event: past the cap, it gives no feature (and is reported)
    assert ids == ["page.visited", "page.visited.url.pricing", "city.Krakow", "quiet-30d"]
    assert survey.skipped() == ["page.visited session"]


def test_a_feature_plan_scores_the_feature() -> None:
    given = parse_feature("page.visited url glob */pricing*")
    survey = _survey([event("page.visited", i, {"url": PRICING}) for i in range(10)])
    features = discover(survey, [given], quiet_days=(7,))
    plans = feature_plans(features)
    history = [
        attributes(0, job_title="cto"),
        event("page.visited", 1, {"url": PRICING}),
        event("page.visited", 2, {"url": PRICING + "?plan=pro"}),
        event("page.visited", 3, {"url": "https://example.com/blog"}),
    ]
    state, _ = run(plans, history)
    assert state is not None
    scores = {plan.name: current_score(plan, state) for plan in plans}
    # the glob counts both pricing pages; the value feature only the exact one
    assert scores == {
        "page.visited.url.glob.pricing": 2,
        "page.visited": 3,
        "page.visited.url.pricing": 1,
        "quiet-7d": 0,
    }
    quiet, _ = run_until(plans, history, 10 * DAY)
    assert current_score(plans.get("quiet-7d"), quiet) == 1  # type: ignore[arg-type]
    later, _ = run_until(plans, [*history, event("page.visited", 11 * DAY)], 12 * DAY)
    assert current_score(plans.get("quiet-7d"), later) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("page.visited url", "expected TYPE FIELD OPERATOR VALUE"),
        ("page.visited url exists true", "OPERATOR one of equals, in, glob"),
        ("deal.sized amount gte many", "gte needs a number"),
    ],
)
def test_a_bad_feature_says_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_feature(text)
