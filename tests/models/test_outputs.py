"""Outputs are compact records: built when read, and as the state was when they were made."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from streams.backtest.replay import replay
from streams.backtest.simulate import generate
from streams.models import outputs as outputs_module
from streams.scoring import Output, advance, load_plans, score_event
from tests.support import DAY, event, run

EXAMPLES = load_plans(Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml")


def test_an_output_read_later_shows_the_score_as_it_was_made() -> None:
    """The core goes on changing the contact's state after an output is made; its data and
    bytes, read only then, are those of the moment it was made."""
    history = [
        event("email.opened", 0),
        event("page.visited", 60, {"url": "https://example.com/pricing"}),
        event("email.replied", 120),
        event("list.unsubscribed", 180),
        event("email.clicked", 240),
    ]
    unread: list[Output] = []
    state = None
    for item in history:
        step = score_event(state, item, EXAMPLES)
        state = step.state
        unread.extend(step.outputs)
    assert state is not None
    unread.extend(advance(state, 95 * DAY, EXAMPLES)[1])
    read_at_once: list[bytes] = []
    state = None
    for item in history:
        step = score_event(state, item, EXAMPLES)
        state = step.state
        read_at_once.extend(output.to_bytes() for output in step.outputs)
    assert state is not None
    read_at_once.extend(output.to_bytes() for output in advance(state, 95 * DAY, EXAMPLES)[1])
    assert [output.to_bytes() for output in unread] == read_at_once
    breakdowns = [output.data["breakdown"] for output in unread if output.kind == "update"]
    assert {"opened": 10, "pricing": 50, "replied": 30} in breakdowns


def test_a_replay_that_only_counts_builds_no_cloudevent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids (a hash each) and times are computed only for the outputs that are read."""
    built: list[bytes] = []
    real = outputs_module.blake2b

    def counting(data: bytes, digest_size: int) -> Any:
        built.append(data)
        return real(data, digest_size=digest_size)

    # The hash, not `output_id`: the compiled core calls its own functions directly, but
    # looks up what it imported in the module's namespace, as the source does.
    monkeypatch.setattr(outputs_module, "blake2b", counting)
    result = replay(list(generate(100, 2_000, seed=4)), EXAMPLES)
    assert result.score_updates > 1_000 and result.alerts
    assert built == []
    ids = [alert.id for alert in result.alerts]
    assert len(built) == len(ids) == len(set(ids))


def test_an_unread_output_pickles_with_its_data() -> None:
    """`backtest --jobs` sends alerts between processes: an output whose data was not built
    yet arrives with the same bytes and id."""
    _, outputs = run(
        EXAMPLES,
        [
            event("email.replied", 0),
            event("email.clicked", 30),
            event("page.visited", 60, {"url": "/pricing"}),
        ],
    )
    copies = [pickle.loads(pickle.dumps(output)) for output in outputs]
    assert any(output.kind == "alert" for output in copies)
    assert [c.to_bytes() for c in copies] == [o.to_bytes() for o in outputs]
    assert [(c.kind, c.id, c.contact_id) for c in copies] == [
        (o.kind, o.id, o.contact_id) for o in outputs
    ]
