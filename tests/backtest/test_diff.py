"""`leadscore plans diff`: a hand-made history where we know who crosses what under each plan set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.backtest.cli import plan_reports
from streams.backtest.diff import PlanDiff, diff_plans, render_text
from streams.backtest.parallel import backtest_file
from streams.cli import main
from streams.models.events import TrackingEvent
from streams.scoring import load_plans
from tests.support import DAY, event

OLD = """
plans:
  - name: engage
    thresholds: [{name: warm, score: 30}]
    rules:
      - {id: opened, when: {type: email.opened}, points: 10}
      - {id: clicked, when: {type: email.clicked}, points: 20}
  - name: retired
    thresholds: [{name: t, score: 2}]
    rules:
      - {id: opened, when: {type: email.opened}, points: 1}
"""
NEW = """
plans:
  - name: engage
    thresholds: [{name: warm, score: 40}, {name: hot, score: 60}]
    rules:
      - {id: opened, when: {type: email.opened}, points: 10}
      - {id: clicked, when: {type: email.clicked}, points: 50}
  - name: newcomer
    thresholds: [{name: t, score: 1}]
    rules:
      - {id: clicked, when: {type: email.clicked}, points: 1}
"""
# engage, old (opened 10, clicked 20, warm 30) -> new (opened 10, clicked 50, warm 40, hot 60):
#   a: open, click           30 -> 60   warm on both at the click (the same alert); hot only new
#   b: click                 20 -> 50   enters warm (alert only new)
#   c: open, open, open      30 -> 30   leaves warm (alert only old, at the third open)
#   d: click, click          40 -> 100  warm at the 2nd click (old) vs the 1st (new); hot only new
#   e: open                  10 -> 10
HISTORY = {
    "a": ["email.opened", "email.clicked"],
    "b": ["email.clicked"],
    "c": ["email.opened", "email.opened", "email.opened"],
    "d": ["email.clicked", "email.clicked"],
    "e": ["email.opened"],
}


def _events() -> list[TrackingEvent]:
    return [
        event(kind, (index + step / 10) * DAY, contact=contact, event_id=f"{contact}-{step}")
        for step in range(3)
        for index, (contact, kinds) in enumerate(HISTORY.items())
        if step < len(kinds)
        for kind in [kinds[step]]
    ]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    old, new, events = tmp_path / "old.yaml", tmp_path / "new.yaml", tmp_path / "events.jsonl"
    old.write_text(OLD)
    new.write_text(NEW)
    lines = [orjson.dumps(e.to_cloudevent()) for e in sorted(_events(), key=lambda e: e.time)]
    events.write_bytes(b"\n".join(lines) + b"\n")
    return old, new, events


def _diffs(old: Path, new: Path, events: Path, jobs: int, sample: int = 5) -> list[PlanDiff]:
    sides = []
    for path in (old, new):
        plans = load_plans(path)
        result = backtest_file(events, plans, jobs=jobs)
        sides.append((result, plans, plan_reports(result, plans, None)))
    return diff_plans(sides[0], sides[1], sample=sample, top=2)


def _alerts(diff: PlanDiff) -> dict[str, Any]:
    return {
        f"{a.threshold} {a.kind}": (
            [s.contact_id for s in a.only_before_sample],
            [s.contact_id for s in a.only_after_sample],
        )
        for a in diff.alerts
    }


def test_who_enters_and_leaves_and_the_alerts_one_side_sends(
    files: tuple[Path, Path, Path],
) -> None:
    engage, retired, newcomer = _diffs(*files, jobs=1)
    assert (engage.plan, engage.status) == ("engage", "both")
    warm, hot = engage.thresholds
    assert (warm.name, warm.score_before, warm.score_after) == ("warm", 30, 40)
    assert (warm.at_or_above_before, warm.at_or_above_after) == (3, 3)
    assert (warm.entered_sample, warm.left_sample) == (("b",), ("c",))
    assert (hot.name, hot.score_before, hot.score_after) == ("hot", None, 60)
    assert (hot.entered, hot.entered_sample, hot.left) == (2, ("a", "d"), 0)
    assert _alerts(engage) == {
        "warm crossed": (["c", "d"], ["b", "d"]),
        "hot crossed": ([], ["a", "d"]),
    }
    # c and b got a warm alert on one side only; d on both, at different clicks
    counts = [(a.contacts_only_before, a.contacts_only_after) for a in engage.alerts]
    assert counts == [(1, 1), (0, 2)]
    only_old_d = engage.alerts[0].only_before_sample[1]
    assert (only_old_d.time, only_old_d.score) == ("2026-01-04T02:24:00Z", 40)
    assert engage.contacts_changed == 3
    assert [(c.contact_id, c.before, c.after, c.change) for c in engage.top_changes] == [
        ("d", 40, 100, 60),
        ("a", 30, 60, 30),
    ]
    assert [(b.count, a.count) for b, a in engage.histogram if b.count or a.count] == [
        (1, 1),  # 10: e
        (1, 0),  # 20: b before
        (2, 1),  # 30: a, c before; c after
        (1, 0),  # 40: d before
        (0, 1),  # 50: b after
        (0, 1),  # 60: a after
        (0, 1),  # 100: d after
    ]

    assert (retired.status, retired.after, newcomer.status, newcomer.before) == (
        "removed",
        None,
        "added",
        None,
    )
    assert (retired.thresholds[0].left_sample, retired.thresholds[0].entered) == (("c",), 0)
    assert _alerts(retired) == {"t crossed": (["c"], [])}
    assert (newcomer.thresholds[0].entered_sample, newcomer.thresholds[0].left) == (
        ("a", "b", "d"),
        0,
    )
    assert newcomer.top_changes == () and newcomer.contacts_changed == 0


def test_samples_are_the_first_ids_in_order(files: tuple[Path, Path, Path]) -> None:
    engage, _, newcomer = _diffs(*files, jobs=1, sample=1)
    assert newcomer.thresholds[0].entered_sample == ("a",)
    assert newcomer.thresholds[0].entered == 3
    assert _alerts(engage) == {"warm crossed": (["c"], ["b"]), "hot crossed": ([], ["a"])}
    text = render_text([engage, newcomer], "before", "after")
    assert "    entered hot (first 1 of 2): a" in text
    assert "    before only, warm crossed (first 1 of 2): c 2026-01-03" in text


def test_text_json_plot_and_jobs(
    files: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, events = (str(path) for path in files)
    plot = tmp_path / "diff.png"
    outputs = []
    for jobs in ("1", "2"):
        command = ["plans", "diff", old, new, events, "--json", "--jobs", jobs]
        assert main([*command, "--plot", str(plot)]) == 0
        document = orjson.loads(capsys.readouterr().out)
        replays = document.pop("replay")
        assert replays["before"]["events"] == replays["after"]["events"] == 9
        assert replays["before"]["alerts"] == 4 and replays["after"]["alerts"] == 8
        outputs.append(document)
    assert outputs[0] == outputs[1]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    engage = outputs[0]["plans"][0]
    assert engage["thresholds"][0]["entered_sample"] == ["b"]
    assert engage["top_changes"][0] == {"contact_id": "d", "before": 40, "after": 100, "change": 60}
    assert engage["before"]["thresholds"][0]["alerts_crossed"] == 3
    assert [plan["status"] for plan in outputs[0]["plans"]] == ["both", "removed", "added"]

    assert main(["plans", "diff", old, new, events, "--jobs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = lines[lines.index("Plan engage") :]  # the two replay summaries are the backtest's
    assert max(map(len, report)) <= 80
    for line in (
        "Plan engage",
        "  warm       30 → 40            3        1     1",
        "  hot         - → 60        0 → 2        2     0",
        "  100 .. 104                                 0  ███████████████                1",
        "  warm crossed               2      2                1      1",
        "  d            40    100     +60",
        "Plan retired (removed: only in before)",
        "Plan newcomer (added: only in after)",
    ):
        assert line in report, (line, report)
