"""Contact state: it round-trips, stays small, and its bounds hold."""

from __future__ import annotations

import math
from pathlib import Path

import msgpack
import pytest

from streams.backtest.simulate import generate
from streams.scoring import (
    ContactState,
    advance,
    apply,
    decode_state,
    encode_state,
    load_plans,
    next_deadline,
    score_event,
)
from streams.scoring.state import (
    AWARD_LIMIT,
    KEY_SIZE,
    SEEN_LIMIT,
    copy_state,
    has_seen,
    remember,
)
from tests.support import DAY, T0, attributes, event, plans_from, run

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"
PLANS = plans_from("""
plans:
  - name: p
    rules:
      - {id: clicked, when: {type: email.clicked}, points: 1}
      - {id: opened, when: {type: email.opened}, points: 2, limit: {count: 100, per: 1d}}
      - {id: pricing, when: {type: page.visited}, points: 5, expires: 90d}
    attributes:
      - {id: city, attribute: city, equals: Kraków, points: 6}
    inactivity:
      - {id: quiet, after: 30d, points: -5}
""")


def test_state_round_trips_through_its_encoding() -> None:
    state, _ = run(
        PLANS,
        [
            attributes(0, city="Kraków", company={"size": 12}),
            event("email.clicked", 1),
            event("page.visited", 2),
            event("email.opened", 40 * DAY),
        ],
    )
    assert state is not None
    assert decode_state(encode_state(state)) == state


def test_a_typical_contact_is_a_few_hundred_bytes() -> None:
    state, _ = run(
        PLANS,
        [attributes(0, city="Kraków", job_title="cto")]
        + [event(kind, i * DAY) for i, kind in enumerate(["email.opened", "email.clicked"] * 10)],
    )
    assert state is not None
    assert len(encode_state(state)) < 1024


def test_awards_are_folded_beyond_the_limit_without_changing_the_score() -> None:
    clicks = [event("email.clicked", i) for i in range(500)]
    state, outputs = run(PLANS, clicks)
    assert state is not None
    assert len(state.plans["p"].awards) <= AWARD_LIMIT
    assert outputs[-1].data["score"] == 500
    assert outputs[-1].data["breakdown"] == {"clicked": 500}
    assert decode_state(encode_state(state)) == state


def test_seen_ids_are_bounded_and_recent_duplicates_still_caught() -> None:
    history = [event("email.clicked", i) for i in range(SEEN_LIMIT + 10)]
    state, _ = run(PLANS, history)
    assert state is not None and len(state.seen) == SEEN_LIMIT * KEY_SIZE
    assert score_event(state, history[-SEEN_LIMIT], PLANS).outcome == "duplicate"


def test_storing_the_state_between_events_changes_nothing() -> None:
    """The worker decodes a contact's state for every event; the outputs must not notice."""
    plans = load_plans(Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml")
    kept: dict[str, ContactState] = {}
    stored: dict[str, bytes] = {}
    for item in generate(100, 3000, seed=11):
        kept[item.subject], direct = apply(kept.get(item.subject), item, plans)
        previous = stored.get(item.subject)
        state, via_storage = apply(
            None if previous is None else decode_state(previous), item, plans
        )
        stored[item.subject] = encode_state(state)
        assert [o.cloudevent for o in via_storage] == [o.cloudevent for o in direct]
    assert {c: encode_state(s) for c, s in kept.items()} == stored


def test_the_core_changing_a_copy_leaves_the_original_as_it_was() -> None:
    """`copy_state` copies everything the core changes in place: over a simulated population,
    scoring each event on a copy leaves the state it was copied from byte for byte the same."""
    plans = load_plans(EXAMPLES)
    states: dict[str, ContactState] = {}
    for item in generate(200, 4_000, seed=3):
        original = states.get(item.subject)
        if original is None:
            states[item.subject] = score_event(None, item, plans).state
            continue
        before = encode_state(original)
        copied = copy_state(original)
        assert encode_state(copied) == before
        states[item.subject] = score_event(copied, item, plans).state
        advance(copied, item.time + 400 * DAY, plans)
        assert encode_state(original) == before


RICH = plans_from("""
plans:
  - name: p
    thresholds: [{name: warm, score: 60}]
    min: -20
    rules:
      - {id: opened, when: {type: email.opened}, points: 10, limit: {count: 3, per: 1d}}
      - {id: clicked, when: {type: email.clicked}, points: 20, limit: {count: 2}}
      - {id: replied, when: {type: email.replied}, points: 30, expires: 10d}
      - {id: pricing, when: {type: page.visited, data: {url: {glob: "*/pricing*"}}},
         points: 50, expires: 5d}
      - {id: anything, when: {}, points: 1}
      - {id: unsubscribed, when: {type: list.unsubscribed}, reset: true}
    attributes:
      - {id: city, attribute: city, equals: Kraków, points: 6}
    inactivity:
      - {id: quiet, after: 20d, reset: true}
      - {id: cooled, after: 3d, points: -15, revert_on_activity: true}
""")


def test_the_derived_totals_always_equal_the_awards() -> None:
    """The engine keeps each plan's points total and earliest expiry up to date as it adds
    and removes awards (limits displacing, resets, expiries, reverts, folding), and each
    contact's bound on its next deadline; over a simulated population with late and repeated
    events, they always equal a recount, and the bound is never later than the deadline."""
    states: dict[str, ContactState] = {}
    history = list(generate(150, 6_000, seed=5, days=60))
    for index in range(0, len(history) - 2, 7):  # some events arrive late
        history[index], history[index + 2] = history[index + 2], history[index]
    for index, item in enumerate(history + history[::50]):
        states[item.subject] = score_event(states.get(item.subject), item, RICH).state
        if index % 5 == 0:
            advance(states[item.subject], item.time + 4 * DAY, RICH)
    checked = 0
    for state in states.values():
        if state.due_bound is not None:
            assert state.due_bound <= (next_deadline(state, RICH) or math.inf)
        for plan_state in state.plans.values():
            expiries = [a.expires_at for a in plan_state.awards if a.expires_at is not None]
            if plan_state.awarded is not None:
                points = sum(a.points for a in plan_state.awards)
                points += sum(f.points for f in plan_state.folded.values())
                assert plan_state.awarded == points
                checked += 1
            if plan_state.expiry is not None:
                assert plan_state.expiry == min(expiries, default=math.inf)
    assert checked > 100


def test_states_of_formats_1_to_3_are_read() -> None:
    """Format 1 was written before plan versions: the contact is on a version no history knows,
    and switches to the one in force when next touched. Formats 1 and 2 stored event keys as
    integers; none of them had a window for late events."""
    state, _ = run(PLANS, [attributes(0, city="Kraków"), event("email.clicked", 1)])
    assert state is not None
    state.plan_version = "v1"
    version, base, window = msgpack.unpackb(encode_state(state), raw=False)
    assert (version, window) == (4, None)
    fields = [3, *msgpack.unpackb(base, raw=False)]
    assert fields[-1] == "v1"
    assert len(fields[7]) == 2 * KEY_SIZE
    format_3 = msgpack.packb(fields, use_bin_type=True)
    assert decode_state(format_3) == state
    as_integers = [
        int.from_bytes(fields[7][at : at + KEY_SIZE], "big")
        for at in range(0, len(fields[7]), KEY_SIZE)
    ]
    format_2 = msgpack.packb([2, *fields[1:7], as_integers, *fields[8:]], use_bin_type=True)
    assert decode_state(format_2) == state
    format_1 = msgpack.packb([1, *fields[1:7], as_integers, *fields[8:-1]], use_bin_type=True)
    decoded = decode_state(format_1)
    assert decoded.plan_version is None
    state.plan_version = None
    assert decoded == state
    with pytest.raises(ValueError, match="state format 5 is not supported"):
        decode_state(msgpack.packb([5, base, None], use_bin_type=True))


def test_a_state_read_from_the_store_is_its_windows_base_until_the_core_changes_it() -> None:
    """The first event after a read costs no encoding for the window's base: the bytes read
    are that base. Any change by the core forgets them, so they are never stale."""
    state, _ = run(PLANS, [event("email.opened", 0)])
    assert state is not None
    read = decode_state(encode_state(state))
    stored = read.stored
    assert stored is not None
    step = score_event(read, event("email.opened", 10 * DAY), PLANS, lateness=DAY)
    assert step.state.window is not None and step.state.window.base is stored
    assert step.state.stored is None
    assert decode_state(encode_state(step.state)) == step.state
    ticked, _ = advance(decode_state(encode_state(step.state)), T0 + 40 * DAY, PLANS)
    assert ticked.stored is None


def test_a_key_is_seen_only_where_a_key_starts() -> None:
    first, second = bytes(range(8)), bytes(range(8, 16))
    seen = remember(remember(b"", first), second)
    assert has_seen(seen, first) and has_seen(seen, second)
    assert not has_seen(seen, (first + second)[4:12])  # the end of one and the start of the next
    key = b"K" * 8
    straddling = b"zzzz" + key[:4] + key[4:] + b"wwww"  # `key` at 4, across two keys
    assert not has_seen(straddling, key)
    assert has_seen(straddling + key, key)  # found at 4 first, then where a key starts
