"""The replay driver: time order, invalid lines, the end time, compressed input."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from streams.backtest import replay as replay_module
from streams.backtest.replay import OutOfOrderError, replay, replay_file
from streams.models.events import MAX_EVENT_BYTES
from streams.scoring import Outcome, current_score, encode_state, load_plans
from tests.support import BOOM, DAY, event, failing_score_event

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


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_the_size_limit_counts_the_event_not_its_line_break(tmp_path: Path, ending: bytes) -> None:
    """The worker's limit, counted the same way: an event of exactly `MAX_EVENT_BYTES`."""
    base = event("email.opened", 0).to_cloudevent()
    padding = MAX_EVENT_BYTES - len(line({**base, "data": {"campaign": ""}}))
    largest = line({**base, "data": {"campaign": "x" * padding}})
    too_large = line({**base, "id": "e-other", "data": {"campaign": "x" * (padding + 1)}})
    assert len(largest) == MAX_EVENT_BYTES
    path = tmp_path / "e.jsonl"
    path.write_bytes(largest + ending + too_large + ending)
    result = replay_file(path, PLANS)
    assert result.outcomes[Outcome.APPLIED] == 1
    assert [(r.line, r.reason) for r in result.rejected] == [(2, "oversized")]


def test_times_the_outputs_cannot_write_are_rejected_lines(tmp_path: Path) -> None:
    base = event("email.opened", 0).to_cloudevent()
    path = write(
        tmp_path / "e.jsonl",
        [
            line({**base, "id": "late", "time": "9999-12-31T23:30:00-01:00"}),
            line({**base, "id": "early", "time": "0001-01-01T00:30:00+01:00"}),
            line(base),
        ],
    )
    result = replay_file(path, PLANS)
    assert [(r.line, r.reason) for r in result.rejected] == [(1, "bad-time"), (2, "bad-time")]
    assert current_score(LEAD, result.states["c-1"]) == 10


@pytest.mark.parametrize("form", ["list", "iterator", "file"])
def test_an_event_the_core_fails_on_is_reported_and_the_contact_kept_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, form: str
) -> None:
    """A list is replayed again with copies after the failure, an iterator with copies from
    the start, a file read again: each gives the same report and states."""
    monkeypatch.setattr(replay_module, "score_event", failing_score_event)
    opened, clicked = event("email.opened", 0), event("email.clicked", 20)
    boom = event(BOOM, 10)
    events = [opened, boom, clicked]
    if form == "file":
        lines = [line(e.to_cloudevent()) for e in events]
        result = replay_file(write(tmp_path / "e.jsonl", [b"{oops", *lines]), PLANS)
        assert [(r.line, r.reason) for r in result.rejected] == [(1, "not-json")]
    else:
        result = replay(events if form == "list" else iter(events), PLANS)
    (failed,) = result.failed
    assert (failed.contact_id, failed.event) == ("c-1", boom)
    assert failed.message.startswith("the scoring core failed: RuntimeError: simulated bug")
    expected = replay([opened, clicked], PLANS)
    assert encode_state(result.states["c-1"]) == encode_state(expected.states["c-1"])
    assert result.outcomes == expected.outcomes
