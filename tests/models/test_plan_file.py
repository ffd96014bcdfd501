"""Plan files: the shipped examples load, and every mistake names file, path and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.models.durations import parse_duration
from streams.models.plan_file import PlanError, load_plans, parse_plans

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"


def test_examples_load() -> None:
    plans = load_plans(EXAMPLES)
    assert [plan.name for plan in plans] == ["lead-score", "icp-fit"]
    lead = plans.get("lead-score")
    assert lead is not None
    assert [t.name for t in lead.thresholds] == ["warm", "hot"]
    assert lead.rule_ids == (
        "opened",
        "clicked",
        "replied",
        "pricing",
        "unsubscribed",
        "went-quiet",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "plans: [{name: a, rules: [{id: x, when: {type: e}, points: 1, limit: {count: 2, per: 3x}}]}]",
            "plans.yaml: plans[0].rules[0].limit.per: expected a duration like 90s, 15m, 12h, 30d or 2w, got '3x'",
        ),
        (
            "plans: [{name: a, rules: [{id: x, when: {type: e}, pionts: 1}]}]",
            "plans.yaml: plans[0].rules[0]: unknown field 'pionts'; allowed: expires, id, limit, points, reset, when",
        ),
        (
            "plans: [{name: a, rules: [{id: x, when: {type: e}}]}]",
            "plans.yaml: plans[0].rules[0]: set exactly one of `points: <number>` or `reset: true`",
        ),
        (
            "plans: [{name: a}, {rules: []}]",
            "plans.yaml: plans[1]: missing required field 'name'",
        ),
        (
            "plans: [{name: a, rules: [{id: x, when: {type: e}, points: 1}, {id: x, when: {type: e}, points: 2}]}]",
            "plans.yaml: plans[0].rules[1].id: duplicate rule id 'x'",
        ),
        (
            "plans: [{name: a, rules: [{id: x, when: {type: e, data: {u: {regex: '('}}}, points: 1}]}]",
            "plans.yaml: plans[0].rules[0].when.data.u.regex: not a valid regular expression",
        ),
        (
            "plans: [{name: a, attributes: [{id: x, attribute: city, points: 1}]}]",
            "plans.yaml: plans[0].attributes[0]: add a condition on the attribute",
        ),
        (
            "plans: [{name: a, inactivity: [{id: q, after: 1d, reset: true, revert_on_activity: true}]}]",
            "plans.yaml: plans[0].inactivity[0].revert_on_activity: a reset cannot be taken back",
        ),
        ("plans: [{name: a, min: 5, max: 1}]", "plans.yaml: plans[0].min: must not exceed max"),
        ("plans: [{name: a}, {name: a}]", "plans.yaml: plans[1].name: duplicate plan name 'a'"),
        ("plans: [{name: off}]", "quotes"),
        ("[]", "plans.yaml: (top level): expected a plans file"),
    ],
)
def test_invalid_plans_name_the_path_and_the_expectation(text: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plans(yaml.safe_load(text), "plans.yaml")
    assert message in str(caught.value)


def test_unreadable_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PlanError, match=r"missing\.yaml: cannot read"):
        load_plans(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("plans: [\n  {name: a\n")
    with pytest.raises(PlanError, match=r"broken\.yaml: line \d+, column \d+: not valid YAML"):
        load_plans(broken)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("2w", 1209600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0d", "1y", "d", "1.5h", " 1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)
