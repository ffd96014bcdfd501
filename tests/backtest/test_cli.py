"""The batch commands as a user runs them: `leadscore simulate`, `backtest`, `plans check`."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from streams.backtest import replay as replay_module
from streams.backtest.replay import replay_file
from streams.cli import main
from streams.models.plan_versions import load_plan_version
from streams.scoring import load_plans
from tests.support import BOOM, event, failing_score_event

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "events.jsonl.gz"
    assert (
        main(["simulate", str(path), "--contacts", "300", "--events", "5000", "--seed", "3"]) == 0
    )
    return path


def test_backtest_writes_scores_alerts_plot_and_json(
    events_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores, alerts, plot = tmp_path / "s.jsonl", tmp_path / "a.jsonl", tmp_path / "p.png"
    code = main(
        [
            "backtest",
            "--plans",
            str(EXAMPLES),
            str(events_file),
            "--json",
            "--suggest-threshold",
            "10",
            "--scores",
            str(scores),
            "--alerts",
            str(alerts),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["replay"]["events"] == 5000
    assert [plan["plan"] for plan in report["plans"]] == ["lead-score", "icp-fit"]
    expected = replay_file(events_file, load_plans(EXAMPLES))
    rows = [orjson.loads(row) for row in scores.read_bytes().splitlines()]
    assert len(rows) == report["replay"]["contacts"] == 300
    assert set(rows[0]["scores"]) == {"lead-score", "icp-fit"}
    assert [orjson.loads(row)["id"] for row in alerts.read_bytes().splitlines()] == [
        alert.id for alert in expected.alerts
    ]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_text_report_and_until(
    events_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "backtest",
                "--plans",
                str(EXAMPLES),
                str(events_file),
                "--until",
                "2026-12-31T00:00:00Z",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "up to 2026-12-31T00:00:00Z" in out
    assert "Plan lead-score: 300 contacts scored" in out


def test_bad_until_is_a_usage_error(events_file: Path) -> None:
    with pytest.raises(SystemExit, match="--until"):
        main(["backtest", "--plans", str(EXAMPLES), str(events_file), "--until", "tomorrow"])


def test_plans_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plans", "check", str(EXAMPLES)]) == 0
    assert "lead-score: active, 6 rules, 2 thresholds" in capsys.readouterr().out
    broken = tmp_path / "plans.yaml"
    broken.write_text("plans: [{name: a, rules: [{id: x, when: {type: e}, points: one}]}]\n")
    assert main(["plans", "check", str(broken)]) == 2
    assert (
        "plans.yaml: plans[0].rules[0].points: expected a whole number" in capsys.readouterr().err
    )


def test_scoring_errors_and_out_of_range_times_are_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_module, "score_event", failing_score_event)
    lines = [
        orjson.dumps(event("email.opened", 0).to_cloudevent()),
        orjson.dumps(
            {**event("email.opened", 5).to_cloudevent(), "time": "9999-12-31T23:30:00-01:00"}
        ),
        orjson.dumps(event(BOOM, 10, event_id="the-boom").to_cloudevent()),
    ]
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["backtest", "--plans", str(EXAMPLES), str(path)]) == 0
    out = capsys.readouterr().out
    assert "rejected lines 1" in out and "line 2: time: '9999-12-31T23:30:00-01:00'" in out
    assert "scoring errors 1" in out
    assert "event 'the-boom' of contact 'c-1': the scoring core failed: RuntimeError" in out
    assert main(["backtest", "--plans", str(EXAMPLES), str(path), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["replay"]["scoring_errors"] == 1


def test_backtest_with_a_plan_history_names_its_versions(
    events_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    later = EXAMPLES.with_name("plans-v2.yaml")
    argv = ["backtest", "--plans", str(EXAMPLES), "--plans", str(later), str(events_file)]
    assert main(argv) == 0
    label = load_plan_version(EXAMPLES).label
    out = capsys.readouterr().out
    assert f"  plans {EXAMPLES}: version {label} (forward)\n" in out
    assert f"  plans {later}: version spring-2 (forward from 2026-02-15T00:00:00Z)\n" in out
    assert main([*argv, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["replay"]["plan_versions"] == [
        {"file": str(EXAMPLES), "version": label, "change": "forward", "effective_from": None},
        {
            "file": str(later),
            "version": "spring-2",
            "change": "forward",
            "effective_from": "2026-02-15T00:00:00Z",
        },
    ]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ("version: b\n", r"b\.yaml: effective_from: required for a --plans file after the first"),
        (
            "effective_from: 2026-01-01T00:00:00Z\n",
            r"b\.yaml: effective_from: 2026-01-01T00:00:00Z is before .*a\.yaml's "
            r"2026-02-01T00:00:00Z; give the --plans files in the order they take over",
        ),
    ],
)
def test_a_plan_history_needs_ordered_effective_froms(
    events_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    second: str,
    message: str,
) -> None:
    body = EXAMPLES.read_text(encoding="utf-8")
    first = tmp_path / "a.yaml"
    first.write_text("effective_from: 2026-02-01T00:00:00Z\n" + body, encoding="utf-8")
    other = tmp_path / "b.yaml"
    other.write_text(second + body, encoding="utf-8")
    argv = ["backtest", str(events_file), "--plans", str(EXAMPLES)]
    assert main([*argv, "--plans", str(first), "--plans", str(other)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_plans_check_prints_the_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plans", "check", str(EXAMPLES.with_name("plans-v2.yaml"))]) == 0
    out = capsys.readouterr().out
    assert "version spring-2, change forward, effective_from 2026-02-15T00:00:00Z\n" in out
    assert main(["plans", "check", str(EXAMPLES)]) == 0
    label = load_plan_version(EXAMPLES).label
    assert f"version {label}, change forward, effective_from when installed\n" in (
        capsys.readouterr().out
    )
