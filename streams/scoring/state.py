"""A contact's scoring state: small, serialisable, and enough to score the next event exactly.

Bounds that keep a contact's state small whatever its history (documented in docs/plans.md):
- `SEEN_LIMIT` recent event ids (8-byte hashes, one `bytes`) for idempotency;
- per plan, at most `AWARD_LIMIT` individual awards; the oldest awards that no expiry or limit
  needs one by one are folded into per-rule totals;
- per limited rule, the times of the awards that used its allowance (at most `count` for a limit
  without `per`; those of the last two `per`s for one with `per`, for late events);
- for late events, only when the driver asks for it (`lateness`): the state before its recent
  events, and at most `WINDOW_LIMIT` of those events (`Window`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Final

import msgpack

from streams.models.events import TrackingEvent
from streams.models.plans import Plan, PlanSet

SEEN_LIMIT: Final = 128
"""Event ids remembered per contact: a re-delivery among the last 128 events changes nothing."""
AWARD_LIMIT: Final = 64
"""Individual awards kept per plan before the oldest foldable ones are summed per rule."""
WINDOW_LIMIT: Final = 64
"""Recent events kept per contact for late arrivals (`Window`); beyond it the oldest half is
folded into the window's base."""
_FORMAT: Final = 4
"""4: `[4, base, window]`, a `Window` for late events beside the state without it (`base`);
3: one list, `seen` one byte string (2: a list of integers; 1: also no `plan_version`)."""
KEY_SIZE: Final = 8
"""Bytes of an event key (`event_key`)."""


class Award:
    """Points given by a rule at a time (event time, or the deadline for inactivity).

    Immutable (`Final`): copies of a plan state share them. A plain class rather than a named
    tuple, which the compiled core builds through Python code, ten times slower."""

    __slots__ = ("expires_at", "points", "rule", "time")

    def __init__(self, rule: str, time: float, points: int, expires_at: float | None) -> None:
        self.rule: Final = rule
        self.time: Final = time
        self.points: Final = points
        self.expires_at: Final = expires_at

    def fields(self) -> tuple[str, float, int, float | None]:
        return self.rule, self.time, self.points, self.expires_at

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Award) and self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash(self.fields())

    def __repr__(self) -> str:
        return f"Award{self.fields()!r}"

    def __reduce__(self) -> tuple[type[Award], tuple[str, float, int, float | None]]:
        return Award, self.fields()


@dataclass(slots=True)
class Folded:
    """Awards summed for size: their total and the latest of their times (for late resets)."""

    points: int
    latest: float


RecentEvent = list[Any]
"""An event of a `Window` as it is stored: `[id, source, type, time, data]`."""


@dataclass(slots=True)
class Window:
    """What a late event needs to be scored as if it had come in time: the contact's state
    before its recent events (`base`), the time that state had reached (`since`), and the
    recent events in time order.

    An event dated at or after `since` that arrives after later ones is scored by replaying
    `base` with the recent events and it in time order, so every rule (windowed limits,
    inactivity that already fired, resets, plan versions) ends exactly where a time-ordered
    replay ends. Both are kept as they are stored, since they are read only when an event is
    late: the base encoded (encoding is cheaper than `copy_state`), the events as plain lists,
    so reading a contact decodes neither."""

    base: bytes
    since: float
    events: list[RecentEvent] = field(default_factory=list)


def recent_event(event: TrackingEvent) -> RecentEvent:
    return [event.id, event.source, event.type, event.time, event.data]


def replayed_event(recent: RecentEvent, contact_id: str) -> TrackingEvent:
    event_id, source, event_type, time, data = recent
    return TrackingEvent(event_id, source, event_type, time, contact_id, data)


@dataclass(slots=True)
class Quiet:
    """An inactivity rule's clock: the anchor time, and whether its penalty already fired."""

    anchor: float
    fired: bool = False


@dataclass(slots=True)
class PlanState:
    """One plan's score for one contact; `score` is the last score reported (clamped)."""

    score: int
    awards: list[Award] = field(default_factory=list)
    folded: dict[str, Folded] = field(default_factory=dict)
    reset_at: float | None = None
    quiet: dict[str, Quiet] = field(default_factory=dict)
    claims: dict[str, list[float]] = field(default_factory=dict)
    """Per limited rule, sorted times of the awards that used its allowance (resets keep them);
    with `per`, those of the last `2 * per` before the clock."""
    awarded: int | None = field(default=None, compare=False, repr=False)
    """Derived, never stored: the points of `awards` and `folded` together (None: not known
    yet). The engine keeps it up to date as it adds awards, so that a score is not a sum over
    every award on every change."""
    expiry: float | None = field(default=None, compare=False, repr=False)
    """Derived, never stored: the earliest `expires_at` of `awards` (`math.inf` for none, None:
    not known yet), so that finding the next deadline is not a scan of every award."""
    ready_for: Plan | None = field(default=None, compare=False, repr=False)
    """Derived, never stored: the plan whose inactivity rules all have a clock in `quiet`
    (checked once per plan object, not on every event)."""


@dataclass(slots=True)
class ContactState:
    """Everything the core knows about one contact.

    `clock` is the latest time the contact was advanced to (event time or timer time);
    `attribute_times` keeps the time of each attribute's last change, removals included, so that
    attribute updates are last-writer-wins by event time whatever the arrival order.
    `erased_at` marks a tombstone: events up to that time are ignored, so a replay cannot bring
    erased data back.
    """

    contact_id: str
    clock: float | None = None
    first_seen: float | None = None
    last_activity: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    attribute_times: dict[str, float] = field(default_factory=dict)
    seen: bytes = b""
    """The keys (`event_key`) of the last `SEEN_LIMIT` events, oldest first, end to end: one
    object instead of 128 integers is a fifth of the memory, a `find` in C instead of 128
    comparisons, and one msgpack `bin` to encode and decode."""
    plans: dict[str, PlanState] = field(default_factory=dict)
    erased_at: float | None = None
    plan_version: str | None = None
    """The label of the plan version the contact was last scored with (None: not yet)."""
    window: Window | None = None
    """Recent history for late events (None: the driver keeps none, or none is needed)."""
    fit: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)
    """Points of each attribute rule per plan name: derived from `attributes`, never stored,
    cleared when they change (matching them on every event was a third of the core's time)."""
    pruned_for: PlanSet | None = field(default=None, compare=False, repr=False)
    """Derived, never stored: the plan set whose inactive plans were last removed from `plans`
    (the engine only adds active ones, so checking once per plan set is enough)."""
    due_bound: float | None = field(default=None, compare=False, repr=False)
    """Derived, never stored: no deadline of any plan is earlier (None: unknown), and every
    plan of `pruned_for` has its plan state. Advancing to a time before it has nothing to do;
    deadlines that move later leave it as it is, new ones lower it."""
    stored: bytes | None = field(default=None, compare=False, repr=False)
    """Derived, never stored: the bytes this state was decoded from (`decode_base`) while the
    core has not changed it since. A window's base is the state before an event, so the state
    as read from the store is that base at no cost; every change of the core clears it."""


def event_key(event: TrackingEvent) -> bytes:
    """64 bits identifying `(source, id)`: small to keep, and collisions are negligible."""
    return blake2b(f"{event.source}\x1f{event.id}".encode(), digest_size=KEY_SIZE).digest()


def has_seen(seen: bytes, key: bytes) -> bool:
    """Whether `key` is one of the keys in `seen` (a match across two keys does not count)."""
    at = seen.find(key)
    while at >= 0:
        if at % KEY_SIZE == 0:
            return True
        at = seen.find(key, at + 1)
    return False


def remember(seen: bytes, key: bytes) -> bytes:
    """`seen` with `key` added last, and the oldest key dropped beyond `SEEN_LIMIT`."""
    if len(seen) >= SEEN_LIMIT * KEY_SIZE:
        return seen[len(seen) - (SEEN_LIMIT - 1) * KEY_SIZE :] + key
    return seen + key


def encode_state(state: ContactState) -> bytes:
    """msgpack: the format, the state without its window (`encode_base`), the window. Field
    order is the format, `_FORMAT` versions it."""
    window = state.window
    stored = None if window is None else [window.base, window.since, window.events]
    packed: bytes = msgpack.packb([_FORMAT, encode_base(state), stored], use_bin_type=True)
    return packed


def encode_base(state: ContactState) -> bytes:
    """The state without its window, as plain lists: what a window's base is made of, and kept
    as it was decoded (`ContactState.stored`) while the state is unchanged."""
    if state.stored is not None:
        return state.stored
    plans = {
        name: [
            plan.score,
            [list(award.fields()) for award in plan.awards],
            {rule: [f.points, f.latest] for rule, f in plan.folded.items()},
            plan.reset_at,
            {rule: [q.anchor, q.fired] for rule, q in plan.quiet.items()},
            plan.claims,
        ]
        for name, plan in state.plans.items()
    }
    packed: bytes = msgpack.packb(
        [
            state.contact_id,
            state.clock,
            state.first_seen,
            state.last_activity,
            state.attributes,
            state.attribute_times,
            state.seen,
            plans,
            state.erased_at,
            state.plan_version,
        ],
        use_bin_type=True,
    )
    return packed


def decode_state(raw: bytes) -> ContactState:
    """The inverse of `encode_state`, also of the formats before it."""
    fields = msgpack.unpackb(raw, raw=False)
    version = fields[0]
    if version == _FORMAT:
        _, base, stored = fields
        state = decode_base(base)
        if stored is not None:
            state.window = Window(*stored)
        return state
    if version not in (3, 2, 1):
        raise ValueError(f"state format {version} is not supported (expected {_FORMAT})")
    if version == 1:  # before plan versions: scored with a version no history knows
        fields.append(None)
    if version in (1, 2):  # event keys as integers
        fields[7] = b"".join(key.to_bytes(KEY_SIZE, "big") for key in fields[7])
    return _state(fields[1:])


def decode_base(raw: bytes) -> ContactState:
    """The inverse of `encode_base`; the state keeps `raw` until the core changes it."""
    state = _state(msgpack.unpackb(raw, raw=False))
    state.stored = raw
    return state


def _state(fields: list[Any]) -> ContactState:
    (
        contact_id,
        clock,
        first_seen,
        last_activity,
        attributes,
        attribute_times,
        seen,
        plans,
        erased_at,
        plan_version,
    ) = fields
    return ContactState(
        contact_id=contact_id,
        clock=clock,
        first_seen=first_seen,
        last_activity=last_activity,
        attributes=attributes,
        attribute_times=attribute_times,
        seen=seen,
        plans={
            name: PlanState(
                score=score,
                awards=[Award(*award) for award in awards],
                folded={rule: Folded(*values) for rule, values in folded.items()},
                reset_at=reset_at,
                quiet={rule: Quiet(*values) for rule, values in quiet.items()},
                claims=claims,
            )
            for name, (score, awards, folded, reset_at, quiet, claims) in plans.items()
        },
        erased_at=erased_at,
        plan_version=plan_version,
    )


def copy_state(state: ContactState) -> ContactState:
    """A copy the core can change without touching `state`: what a driver keeps so that an
    event the core fails on leaves the contact exactly as it was.

    Structural, not `deepcopy` (ten times slower) nor `decode_state(encode_state(...))` (three
    times): every mutable container the core changes in place is copied; awards, the event keys
    and attribute values are replaced, never changed, so they are shared.
    """
    return ContactState(
        state.contact_id,
        state.clock,
        state.first_seen,
        state.last_activity,
        state.attributes.copy(),
        state.attribute_times.copy(),
        state.seen,
        {name: _copy_plan(plan) for name, plan in state.plans.items()},
        state.erased_at,
        state.plan_version,
        None if state.window is None else _copy_window(state.window),
        state.fit.copy(),
        state.pruned_for,
        state.due_bound,
        state.stored,
    )


def _copy_window(window: Window) -> Window:
    return Window(window.base, window.since, window.events.copy())


def _copy_plan(plan: PlanState) -> PlanState:
    return PlanState(
        plan.score,
        plan.awards.copy(),
        {rule: Folded(f.points, f.latest) for rule, f in plan.folded.items()}
        if plan.folded
        else {},
        plan.reset_at,
        {rule: Quiet(q.anchor, q.fired) for rule, q in plan.quiet.items()},
        {rule: times.copy() for rule, times in plan.claims.items()} if plan.claims else {},
        plan.awarded,
        plan.expiry,
        plan.ready_for,
    )
