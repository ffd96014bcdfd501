"""A plans file's version keys and the history of versions."""

from __future__ import annotations

from math import inf
from pathlib import Path

import pytest

from streams.models.plan_file import PlanError
from streams.models.plan_versions import (
    Change,
    PlanHistory,
    PlanVersion,
    load_plan_version,
    parse_plan_version,
)
from streams.models.times import parse_time

PLANS = "plans:\n  - name: p\n    rules: [{id: r, when: {type: email.opened}, points: 1}]\n"
NOON = parse_time("2026-12-01T12:00:00Z")


@pytest.mark.parametrize(
    "written",
    [
        '"2026-12-01T12:00:00Z"',
        "2026-12-01T12:00:00Z",  # YAML reads it as a datetime
        "2026-12-01T13:00:00+01:00",
        "2026-12-01 12:00:00Z",
        "'2026-12-01T14:00:00+02:00'",
    ],
)
def test_effective_from_quoted_or_not(written: str) -> None:
    version = parse_plan_version(f"effective_from: {written}\n{PLANS}", "v.yaml")
    assert version.effective_from == NOON


def test_effective_from_keeps_a_fraction() -> None:
    version = parse_plan_version(f"effective_from: 2026-12-01T12:00:00.25Z\n{PLANS}", "v.yaml")
    assert version.effective_from == NOON + 0.25


@pytest.mark.parametrize("written", ["2026-12-01T12:00:00", '"2026-12-01T12:00:00"'])
def test_effective_from_without_a_time_zone_is_refused(written: str) -> None:
    with pytest.raises(PlanError) as error:
        parse_plan_version(f"effective_from: {written}\n{PLANS}", "v.yaml")
    assert str(error.value) == (
        "v.yaml: effective_from: add a time zone (e.g. `Z` for UTC) to 2026-12-01T12:00:00"
    )


def test_effective_from_with_a_date_alone_is_refused() -> None:
    with pytest.raises(PlanError) as error:
        parse_plan_version(f"effective_from: 2026-12-01\n{PLANS}", "v.yaml")
    assert str(error.value) == (
        "v.yaml: effective_from: add a time of day and a time zone to 2026-12-01, "
        "e.g. 2026-12-01T00:00:00Z"
    )


@pytest.mark.parametrize("written", ["tomorrow", "12", "20261201T120000Z"])
def test_effective_from_that_is_not_a_time_is_refused(written: str) -> None:
    with pytest.raises(PlanError, match=r"^v\.yaml: effective_from: "):
        parse_plan_version(f"effective_from: {written}\n{PLANS}", "v.yaml")


def test_defaults_a_content_label_forward_and_installed_time() -> None:
    version = parse_plan_version(PLANS, "v.yaml")
    assert version.effective_from is None and version.change is Change.FORWARD
    assert len(version.label) == 12 and version.plans.plans[0].version == version.label
    # the label is the content's, not the spacing's or the comments'
    spaced = parse_plan_version("# a comment\n" + PLANS.replace(": ", ":   "), "other.yaml")
    assert spaced.label == version.label
    assert parse_plan_version(PLANS.replace("points: 1", "points: 2")).label != version.label
    assert version.installed_at(NOON).effective_from == NOON
    assert version.installed_at(NOON).installed_at(0.0).effective_from == NOON


def test_explicit_label_and_change(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(f"version: spring-2\nchange: rescore\n{PLANS}", encoding="utf-8")
    version = load_plan_version(path)
    assert (version.label, version.change, version.text) == (
        "spring-2",
        Change.RESCORE,
        path.read_text(encoding="utf-8"),
    )
    assert version.describe() == "version spring-2 (rescore)"


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("change: backwards\n", r"change: expected .*got 'backwards'"),
        ("version: 'a b'\n", r"version: expected a label"),
        ("version: 7\n", r"version: expected a label"),
    ],
)
def test_bad_version_keys_name_the_key(head: str, message: str) -> None:
    with pytest.raises(PlanError, match=rf"^v\.yaml: {message}"):
        parse_plan_version(head + PLANS, "v.yaml")


def test_an_unreadable_file_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read the plans file"):
        load_plan_version(tmp_path / "missing.yaml")


def at(moment: float | None, label: str) -> PlanVersion:
    version = parse_plan_version(f"version: {label}\n{PLANS}")
    return version if moment is None else version.installed_at(moment)


def test_history_takes_over_at_each_start() -> None:
    history = PlanHistory((at(50.0, "a"), at(10.0, "b"), at(10.0, "c"), at(20.0, "d")))
    assert history.start(0) == -inf  # the first is in force since ever, whatever it says
    assert [history.index_at(t) for t in (-1e18, 9.9, 10.0, 19.9, 20.0, 1e18)] == [0, 0, 2, 2, 3, 3]
    assert history.latest.label == "d"
    assert history.index_of("b") == 1 and history.index_of("zz") is None


def test_history_ordering_errors() -> None:
    with pytest.raises(ValueError, match="at least one version"):
        PlanHistory(())
    with pytest.raises(ValueError, match="order of their effective_from"):
        PlanHistory((at(None, "a"), at(20.0, "b"), at(10.0, "c")))
    with pytest.raises(ValueError, match="order of their effective_from"):
        PlanHistory((at(None, "a"), at(10.0, "b"), at(None, "c")))  # not installed: -inf
    history = PlanHistory((at(None, "a"), at(20.0, "b")))
    with pytest.raises(ValueError, match="installed_at"):
        history.then(at(None, "c"))
    with pytest.raises(ValueError, match="takes over before version b"):
        history.then(at(19.0, "c"))
    assert history.then(at(20.0, "c")).index_at(20.0) == 2


def test_a_label_that_comes_back_is_found_by_the_moment() -> None:
    history = PlanHistory((at(None, "a"), at(10.0, "b"), at(20.0, "a")))
    assert history.index_of("a") == 2
    assert history.index_of("a", 15.0) == 0
    assert history.index_of("a", 20.0) == 2
    assert history.index_of("b", 5.0) is None
