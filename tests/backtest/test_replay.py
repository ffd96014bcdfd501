"""The replay driver: time order, invalid lines, the end time, compressed input."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from streams.backtest.replay import OutOfOrderError, replay, replay_file
from streams.scoring import Outcome, current_score, load_plans
from tests.support import DAY, event

PLANS = load_plans(Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml")
LEAD = PLANS.plans[0]


def write(path: Path, lines: list[bytes]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        out.write(b"\n".join(lines) + b"\n")
    return path


def line(item: object) -> bytes:
    return orjson.dumps(item)


def test_replay_requires_time_order() -> None:
    with pytest.raises(OutOfOrderError):
        replay([event("email.opened", 10), event("email.opened", 5)], PLANS)


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_a_file_out_of_order_is_sorted_and_bad_lines_are_reported(
    tmp_path: Path, name: str
) -> None:
    events = [event("email.replied", 30), event("email.opened", 10), event("list.unsubscribed", 20)]
    path = write(
        tmp_path / name,
        [
            line(events[0].to_cloudevent()),
            b"{oops",
            line(events[1].to_cloudevent()),
            b"",
            line({**events[2].to_cloudevent(), "time": "never"}),
            line(events[2].to_cloudevent()),
        ],
    )
    progress: list[tuple[int, int]] = []
    result = replay_file(path, PLANS, progress=lambda done, total: progress.append((done, total)))
    assert current_score(LEAD, result.states["c-1"]) == 30  # the open was reset, the reply kept
    assert [(r.line, r.reason) for r in result.rejected] == [(2, "not-json"), (5, "bad-time")]
    assert result.outcomes[Outcome.APPLIED] == 3
    assert progress[-1][0] == progress[-1][1]


def test_contacts_are_advanced_to_the_end_time(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", [line(event("email.replied", 0).to_cloudevent())])
    assert current_score(LEAD, replay_file(path, PLANS).states["c-1"]) == 30
    later = replay_file(path, PLANS, until=event("x", 31 * DAY).time)
    assert current_score(LEAD, later.states["c-1"]) == 0  # went quiet: reset after 30 days


def test_alerts_are_kept_and_updates_counted() -> None:
    result = replay(
        [
            event("email.replied", 0),
            event("email.clicked", 1, {"url": "/blog"}),
            event("page.visited", 2, {"url": "/pricing"}),
        ],
        PLANS,
    )
    assert [(a.data["threshold"], a.data["score"]) for a in result.alerts] == [("warm", 100)]
    assert result.score_updates == 3
