"""`leadscore explain`: one contact's ledger, built from the core's own score updates."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from streams.backtest.explain import Change, Explanation, explain_file, ledger_of, render_text
from streams.cli import main
from streams.models.events import TrackingEvent
from streams.models.outputs import SCORE_CHANGED, THRESHOLD_CROSSED, Cause, Output
from streams.scoring import load_plans
from tests.support import DAY, T0, attributes, event, run_until

PLANS = """
plans:
  - name: engage
    thresholds: [{name: warm, score: 25}]
    rules:
      - {id: opened, when: {type: email.opened}, points: 10}
      - {id: clicked, when: {type: email.clicked}, points: 20}
      - {id: pricing-click, when: {type: email.clicked, data: {url: {glob: "*/pricing*"}}}, points: 5}
    inactivity:
      - {id: went-quiet, after: 30d, reset: true}
  - name: fit
    attributes:
      - {id: president, attribute: job_title, equals: president, points: 10}
"""
PRICING = {"url": "https://example.com/pricing"}
C1 = [
    event("email.opened", 0, contact="c-1", event_id="e-1"),
    event("email.clicked", 1 * DAY, PRICING, contact="c-1", event_id="e-2"),
    attributes(2 * DAY, contact="c-1", job_title="president"),
]
OTHERS = [
    event("email.opened", 0.5 * DAY, contact="c-2"),
    # the file's last event: the backtest advances c-1 to it, past c-1's 30 quiet days
    event("email.opened", 40 * DAY, contact="c-2"),
]


def _write(path: Path, events: list[TrackingEvent], shuffle: bool = False) -> Path:
    lines = [orjson.dumps(e.to_cloudevent()) for e in events]
    lines.insert(2, b'{"not": "an event"}')
    if shuffle:
        random.Random(4).shuffle(lines)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def plans_file(tmp_path: Path) -> Path:
    path = tmp_path / "plans.yaml"
    path.write_text(PLANS)
    return path


def _row(change: Change) -> tuple[str, str, str, dict[str, int], int, int, tuple[str, ...]]:
    event_id = change.cause.get("event_id", "timer")
    return (
        change.plan,
        change.time,
        event_id,
        change.points,
        change.score,
        change.previous_score,
        change.alerts,
    )


EXPECTED = [
    ("engage", "2026-01-01T00:00:00Z", "e-1", {"opened": 10}, 10, 0, ()),
    (
        "engage",
        "2026-01-02T00:00:00Z",
        "e-2",
        {"clicked": 20, "pricing-click": 5},
        35,
        10,
        ("crossed warm",),
    ),
    ("fit", "2026-01-03T00:00:00Z", C1[2].id, {"president": 10}, 10, 0, ()),
    (
        "engage",
        "2026-02-01T00:00:00Z",  # 30 days after the click: the contact update is no activity
        "timer",
        {"opened": -10, "clicked": -20, "pricing-click": -5},
        0,
        35,
        ("dropped warm",),
    ),
]


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "out-of-order"])
def test_ledger_of_one_contact(tmp_path: Path, plans_file: Path, shuffle: bool) -> None:
    events_file = _write(tmp_path / "events.jsonl", [*C1, *OTHERS], shuffle)
    explanation = explain_file(events_file, "c-1", load_plans(plans_file))
    assert [_row(change) for change in explanation.changes] == EXPECTED
    assert explanation.events == 3
    assert explanation.until == T0 + 40 * DAY
    assert len(explanation.rejected) == 1


def test_ledger_agrees_with_the_score_updates_and_the_backtest_alerts(
    tmp_path: Path, plans_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plans = load_plans(plans_file)
    events_file = _write(tmp_path / "events.jsonl", [*C1, *OTHERS])
    explanation = explain_file(events_file, "c-1", plans)
    _, outputs = run_until(plans, C1, 40 * DAY)
    updates = [o for o in outputs if o.kind == "update"]
    assert [(c.time, c.cause, c.score, c.previous_score) for c in explanation.changes] == [
        (u.cloudevent["time"], u.data["cause"], u.data["score"], u.data["previous_score"])
        for u in updates
    ]
    alerts_file = tmp_path / "alerts.jsonl"
    command = ["backtest", "--plans", str(plans_file), str(events_file), "--alerts"]
    assert main([*command, str(alerts_file), "--jobs", "1"]) == 0
    capsys.readouterr()
    alerts = [orjson.loads(line) for line in alerts_file.read_bytes().splitlines()]
    explained = [(c.time, alert) for c in explanation.changes for alert in c.alerts]
    assert explained == [
        (
            a["time"],
            ("crossed " if a["type"] == THRESHOLD_CROSSED else "dropped ") + a["data"]["threshold"],
        )
        for a in alerts
        if a["subject"] == "c-1"
    ]


def test_late_events_at_equal_times_are_explained_in_line_order(
    tmp_path: Path, plans_file: Path
) -> None:
    """The backtest's order: by time, equal times in line order, late lines too."""
    events = [
        event("email.opened", 2 * DAY, contact="c-4", event_id="e-3"),
        event("email.clicked", DAY, contact="c-4", event_id="e-2"),
        event("email.opened", DAY, contact="c-4", event_id="e-1"),
    ]
    explanation = explain_file(_write(tmp_path / "e.jsonl", events), "c-4", load_plans(plans_file))
    assert [_row(change)[2] for change in explanation.changes] == ["e-2", "e-1", "e-3"]


def test_an_erased_contact_starts_a_new_ledger(tmp_path: Path, plans_file: Path) -> None:
    events = [
        event("email.opened", 0, contact="c-3", event_id="e-1"),
        event("contact.erased", DAY, contact="c-3", event_id="e-2"),
        event("email.opened", 2 * DAY, contact="c-3", event_id="e-3"),
    ]
    explanation = explain_file(_write(tmp_path / "e.jsonl", events), "c-3", load_plans(plans_file))
    assert [_row(change)[2:6] for change in explanation.changes] == [
        ("e-1", {"opened": 10}, 10, 0),
        ("e-3", {"opened": 10}, 10, 0),
    ]
    assert explanation.erased == ["2026-01-02T00:00:00Z"]


def test_plan_version_is_shown_when_the_update_has_one() -> None:
    cause = Cause(T0, ("opened",), event("email.opened", contact="c-9", event_id="e-9"))
    data = {
        "contact_id": "c-9",
        "plan": "engage",
        "score": 10,
        "previous_score": 0,
        "cause": cause.to_json(),
        "breakdown": {"opened": 10},
        "plan_version": "v2",
    }
    update = Output("update", SCORE_CHANGED, "/leadscore/plans/engage", "c-9", cause, data)
    switched = Output(
        "update",
        SCORE_CHANGED,
        "/leadscore/plans/engage",
        "c-9",
        Cause(T0 + 1, (), None, "v3"),
        {
            **data,
            "score": 15,
            "previous_score": 10,
            "plan_version": "v3",
            "cause": Cause(T0 + 1, (), None, "v3").to_json(),
        },
    )
    changes, _ = ledger_of([update, switched])
    assert [change.plan_version for change in changes] == ["v2", "v3"]
    text = render_text(Explanation("c-9", 1, None, changes), ["engage"])
    assert "Plan engage: 2 score changes, version v2\n" in text
    assert "now 10 (was 0)\n" in text
    assert "plan v3" in text and "now 15 (was 10)  version v3" in text
    without = Output("update", SCORE_CHANGED, "/x", "c-9", cause, {**data, "plan_version": None})
    text = render_text(Explanation("c-9", 1, None, ledger_of([without])[0]), ["engage"])
    assert "version" not in text


def test_explain_command_text_json_and_unknown_contact(
    tmp_path: Path, plans_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events_file = str(_write(tmp_path / "events.jsonl", [*C1, *OTHERS]))
    assert main(["explain", "c-1", "--plans", str(plans_file), events_file]) == 0
    updated = f"contact.updated {C1[2].id}"
    version = load_plans(plans_file).version
    assert capsys.readouterr().out == (
        "Contact c-1: 3 events, up to 2026-02-10T00:00:00Z\n"
        "\n"
        f"Plan engage: 3 score changes, version {version}\n"
        "  2026-01-01T00:00:00Z  email.opened e-1   opened +10                                 now 10 (was 0)\n"
        "  2026-01-02T00:00:00Z  email.clicked e-2  clicked +20, pricing-click +5              now 35 (was 10)  crossed warm\n"
        "  2026-02-01T00:00:00Z  timer went-quiet   opened -10, clicked -20, pricing-click -5  now 0 (was 35)   dropped warm\n"
        "\n"
        f"Plan fit: 1 score changes, version {version}\n"
        f"  2026-01-03T00:00:00Z  {updated}  president +10  now 10 (was 0)\n"
        "rejected lines in the file: 1\n"
    )

    until = ["--until", "2026-01-20T00:00:00Z", "--json"]
    assert main(["explain", "c-1", "--plans", str(plans_file), events_file, *until]) == 0
    document = orjson.loads(capsys.readouterr().out)
    assert document["until"] == "2026-01-20T00:00:00Z"
    assert [c["points"] for c in document["changes"]] == [e[3] for e in EXPECTED[:3]]
    assert document["changes"][1]["alerts"] == ["crossed warm"]
    assert document["changes"][0]["plan_version"] == version

    assert main(["explain", "c-404", "--plans", str(plans_file), events_file]) == 1
    assert "no events of 'c-404'" in capsys.readouterr().err
