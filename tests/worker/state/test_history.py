"""Score history: the ledger's bounds, order and encoding, without Kafka; then a real worker's
`GET /contacts/{id}/history` against the score updates it sent, also after a restart."""

from __future__ import annotations

import signal
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.backtest.explain import explain_file
from streams.backtest.replay import replay
from streams.models.events import TrackingEvent
from streams.models.outputs import SCORE_CHANGED, Cause, Output
from streams.models.times import format_time
from streams.scoring import load_plans
from streams.worker.state.history import EMPTY, Ledger, history_view
from streams.worker.state.store import pack_record, record_applied, record_history, record_state
from tests.support import DAY, T0, attributes, event, plans_from, run, run_until
from tests.worker.conftest import StartWorker
from tests.worker.harness import (
    EXAMPLE_PLANS,
    TopicReader,
    WorkerProcess,
    http_get,
    key_on_partition,
    partition_of,
    publish,
    wait_until,
)

PLANS = load_plans(EXAMPLE_PLANS)
ACTIVE = PLANS.active_names


def _opens(count: int, contact: str = "c-1", first: int = 0) -> list[TrackingEvent]:
    """`count` openings a day apart from day `first`: +10 each."""
    return [
        event("email.opened", day * DAY, contact=contact) for day in range(first, first + count)
    ]


def _expected(outputs: Iterable[Output], plan: str) -> list[dict[str, Any]]:
    """What the history shows of `plan`'s score updates among `outputs`."""
    return [
        {
            "time": format_time(output.cause.time),
            "score": output.data["score"],
            "previous_score": output.data["previous_score"],
            "cause": output.data["cause"],
            "plan_version": output.data.get("plan_version"),
        }
        for output in outputs
        if output.type == SCORE_CHANGED and output.data["plan"] == plan
    ]


def _ledger(outputs: Sequence[Output], size: int, start: Ledger = EMPTY) -> Ledger:
    """Record the outputs one at a time, as the processor does event after event."""
    ledger = start
    for output in outputs:
        ledger = ledger.recorded([output], size, ACTIVE)
    return ledger


def test_the_ledger_keeps_the_last_n_changes_of_each_plan_oldest_first() -> None:
    _, outputs = run(PLANS, [attributes(0, job_title="president", city="Kraków"), *_opens(8)[1:]])
    ledger = Ledger(_ledger(outputs, 3).encoded())
    lead = _expected(outputs, "lead-score")
    assert len(lead) == 7 and ledger.changes("lead-score", 100) == lead[-3:]
    assert [change["score"] for change in lead[-3:]] == [50, 60, 70]
    # The other plan's two changes are kept: the bound is per plan, not per contact.
    assert ledger.changes("icp-fit", 100) == _expected(outputs, "icp-fit")
    assert [change["score"] for change in ledger.changes("icp-fit", 100)] == [16]
    # Read with a smaller size (the operator lowered it), the last ones are shown.
    assert ledger.changes("lead-score", 2) == lead[-2:]


def test_a_ledger_survives_the_stored_record_exactly() -> None:
    """Event causes are stored as their values, timer causes and any other as they are; all
    come back as the topic had them, with the plan version once outputs carry one."""
    _, outputs = run_until(PLANS, [attributes(0, job_title="president"), *_opens(2)], 40 * DAY)
    other = Output(
        "update",
        SCORE_CHANGED,
        "/leadscore/plans/lead-score",
        "c-1",
        Cause(T0 + 41 * DAY, ()),
        {
            "plan": "lead-score",
            "score": 5,
            "previous_score": 0,
            "cause": {"plan_change": "v2"},
            "plan_version": "v2",
        },
    )
    ledger = _ledger([*outputs, other], 20)
    record = pack_record(T0, {0: 7, 4: 9}, b"state", ledger.encoded())
    assert (record_applied(record), record_state(record)) == ({0: 7, 4: 9}, b"state")
    stored = Ledger(record_history(record))
    for plan in ACTIVE:
        assert stored.changes(plan, 20) == _expected([*outputs, other], plan)
    causes = [change["cause"] for change in stored.changes("lead-score", 20)]
    assert {"rules": ["went-quiet"], "timer": True} in causes
    assert causes[-1] == {"plan_change": "v2"}
    assert stored.changes("lead-score", 20)[-1]["plan_version"] == "v2"


def test_a_record_without_history_keeps_the_layout_it_had_before() -> None:
    assert record_history(pack_record(None, {0: 7}, b"state")) == b""
    assert EMPTY.encoded() == b""
    assert pack_record(None, {0: 7}, b"state", EMPTY.encoded()) == pack_record(
        None, {0: 7}, b"state"
    )


def test_recording_leaves_the_ledger_it_started_from_as_it_was() -> None:
    """A state being persisted shares its ledger with the next event's state."""
    _, outputs = run(PLANS, _opens(4))
    before = _ledger(outputs[:2], 2)
    encoded = before.encoded()
    after = _ledger(outputs[2:], 2, before)
    assert before.encoded() == encoded
    assert before.changes("lead-score", 2) == _expected(outputs[:2], "lead-score")
    assert after.changes("lead-score", 2) == _expected(outputs, "lead-score")[2:]


def test_outputs_without_a_score_change_leave_the_ledger_untouched() -> None:
    ledger = _ledger(run(PLANS, _opens(2))[1], 20)
    stored = Ledger(ledger.encoded())
    assert stored.recorded([], 20, ACTIVE) is stored
    assert stored.changes("lead-score", 20) == ledger.changes("lead-score", 20)


def test_an_erasure_empties_the_history() -> None:
    _, outputs = run(PLANS, [*_opens(3), event("contact.erased", 4 * DAY)])
    assert _ledger(outputs, 20).encoded() == b""


def test_size_zero_drops_the_history_and_inactive_plans_are_dropped_when_recording() -> None:
    outputs = run(PLANS, [attributes(0, job_title="president"), *_opens(2)])[1]
    ledger = _ledger(outputs, 20)
    assert ledger.recorded([], 0, ACTIVE) is EMPTY
    _, more = run(PLANS, _opens(1, "c-2"))
    only_lead = ledger.recorded(more, 20, {"lead-score"})
    assert only_lead.changes("icp-fit", 20) == []
    assert len(only_lead.changes("lead-score", 20)) == 3


def test_the_view_shows_every_active_plan_or_the_one_asked_for() -> None:
    _, outputs = run(PLANS, _opens(5))
    ledger = _ledger(outputs, 20)
    status, body = history_view("c-1", ledger, PLANS, 2, None)
    assert status == 200
    assert body == {
        "contact_id": "c-1",
        "history_size": 2,
        "plans": {"lead-score": _expected(outputs, "lead-score")[-2:], "icp-fit": []},
    }
    assert history_view("c-1", ledger, PLANS, 20, "icp-fit")[1]["plans"] == {"icp-fit": []}
    status, body = history_view("c-1", ledger, PLANS, 20, "nope")
    assert (status, body["error"], body["plans"]) == (
        404,
        "unknown plan",
        ["lead-score", "icp-fit"],
    )


def test_only_active_plans_are_shown() -> None:
    plans = plans_from(
        """
plans:
  - {name: live, rules: [{id: o, when: {type: email.opened}, points: 1}]}
  - {name: paused, active: false, rules: [{id: o, when: {type: email.opened}, points: 1}]}
"""
    )
    _, outputs = run(plans, _opens(1))
    ledger = EMPTY.recorded(outputs, 20, plans.active_names)
    assert list(history_view("c-1", ledger, plans, 20, None)[1]["plans"]) == ["live"]
    assert history_view("c-1", ledger, plans, 20, "paused")[0] == 404


# --- through a real worker -----------------------------------------------------------------


def _topic_history(updates: Iterable[dict[str, Any]], contact: str) -> dict[str, list[Any]]:
    """Per plan, what the history should show of `contact`'s updates on the topic (a re-sent
    update, with its id, counted once)."""
    seen: set[str] = set()
    history: dict[str, list[Any]] = defaultdict(list)
    for update in updates:
        if update["subject"] != contact or update["type"] != SCORE_CHANGED or update["id"] in seen:
            continue
        seen.add(update["id"])
        data = update["data"]
        history[data["plan"]].append(
            {
                "time": update["time"],
                "score": data["score"],
                "previous_score": data["previous_score"],
                "cause": data["cause"],
                "plan_version": data.get("plan_version"),
            }
        )
    return history


def _agrees(worker: WorkerProcess, reader: TopicReader, contacts: Iterable[str], size: int) -> None:
    updates = reader.values()
    for contact in contacts:
        status, body = http_get(f"{worker.url}/contacts/{contact}/history")
        assert status == 200, body
        expected = _topic_history(updates, contact)
        assert body["plans"] == {plan: expected[plan][-size:] for plan in ACTIVE}, contact


def _explain_agrees(
    tmp_path: Path, events: Sequence[TrackingEvent], reader: TopicReader, contacts: Iterable[str]
) -> None:
    """Every change `leadscore explain` prints for a contact, in order, is the contact's score
    update on the topic: time, score, previous score, cause and plan version."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e.to_cloudevent()) + b"\n" for e in events))
    updates = reader.values()
    for contact in contacts:
        explained: dict[str, list[Any]] = defaultdict(list)
        for change in explain_file(path, contact, PLANS).changes:
            explained[change.plan].append(
                {
                    "time": change.time,
                    "score": change.score,
                    "previous_score": change.previous_score,
                    "cause": dict(change.cause),
                    "plan_version": change.plan_version,
                }
            )
        assert explained == _topic_history(updates, contact), contact


@pytest.mark.integration
def test_the_history_endpoint_agrees_with_the_score_updates_also_after_a_kill(
    start_worker: StartWorker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`leadscore explain` over the same events gives the same ledger as the topic too."""
    size = 3
    worker = start_worker(extra_args=["--history-size", str(size)])
    stem = uuid.uuid4().hex[:6]
    busy, fit, few = f"busy-{stem}", f"fit-{stem}", f"few-{stem}"
    # `fit` gets the no-offer-visit penalty (due on day 30) from a timer once a later event
    # moves its partition's stream time to day 31; the others' first deadlines are later.
    clock = key_on_partition(partition_of(fit, worker.partitions), worker.partitions, "clock")
    events = [
        *_opens(6, busy, first=2),  # seven changes: the history keeps the last three
        event("email.clicked", 8 * DAY, {"url": "https://example.com/l"}, busy),
        attributes(0, fit, job_title="president", city="Kraków"),
        event("email.opened", 2 * DAY, contact=few),
        event("email.opened", 31 * DAY, contact=clock),
    ]
    publish(kafka_bootstrap, worker.topics.events, events)
    changes = replay(sorted(events, key=lambda e: e.time), PLANS).score_updates
    reader = TopicReader(kafka_bootstrap, worker.topics.updates)
    wait_until(
        lambda: len({u["id"] for u in reader.values() if u["type"] == SCORE_CHANGED}) == changes,
        60,
        f"{changes} score updates, the timer's included",
    )
    contacts = [busy, fit, few]
    _agrees(worker, reader, contacts, size)
    _explain_agrees(tmp_path, events, reader, contacts)
    fit_history = http_get(f"{worker.url}/contacts/{fit}/history?plan=icp-fit")[1]
    assert [c["score"] for c in fit_history["plans"]["icp-fit"]] == [16, 6]
    assert fit_history["plans"]["icp-fit"][-1]["cause"] == {
        "rules": ["no-offer-visit"],
        "timer": True,
    }
    assert http_get(f"{worker.url}/contacts/{busy}/history?plan=nope")[0] == 404
    assert http_get(f"{worker.url}/contacts/nobody-{stem}/history")[0] == 404

    # Killed, and replaced by a worker with an empty data dir: all it knows comes from the
    # changelog, and the history goes on from there.
    worker.stop(signal.SIGKILL)
    after = start_worker("after", prefix=worker.prefix, extra_args=["--history-size", str(size)])
    _agrees(after, reader, contacts, size)
    publish(kafka_bootstrap, worker.topics.events, [event("email.replied", 9 * DAY, contact=busy)])
    wait_until(
        lambda: (
            len({u["id"] for u in reader.values() if u["type"] == SCORE_CHANGED}) == changes + 1
        ),
        60,
        "the score update after the restart",
    )
    _agrees(after, reader, contacts, size)
    busy_after = http_get(f"{after.url}/contacts/{busy}/history?plan=lead-score")[1]
    assert [c["score"] for c in busy_after["plans"]["lead-score"]] == [60, 80, 110]
