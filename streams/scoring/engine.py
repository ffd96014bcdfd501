"""The scoring semantics: events and the passing of time in, new state and outputs out.

Pure and deterministic: no Kafka, no clock, no I/O. The stream worker, the backtest and the tests
all drive these functions, so a replay of the same events gives the same scores and output ids.
Functions take ownership of the state they are given: they may change it and return it, which
keeps the hot path free of copies (call `decode_state(encode_state(s))` to keep an old version).

Rules of the game (also in docs/plans.md):
- score = live behavioural awards since the last reset + attribute points + inactivity points
  since the last reset, clamped to the plan's `min`/`max`;
- a reset clears the awards of events before its time (events at the same instant survive), so
  the final score does not depend on arrival order; attribute points stay; a limit's allowance
  is not given back by a reset (`limit: {count: 1}` means once per contact, ever);
- an inactivity rule fires once per quiet period, `after` the latest event matching `of`;
- before an event is applied, the contact is advanced to the event's time, so a deadline that
  passed between two events fires at its own time, whichever driver calls us and when.
"""

from __future__ import annotations

import bisect
from enum import StrEnum
from functools import partial
from math import inf, nextafter
from typing import Any, Final

from streams.models.events import (
    CONTACT_ERASED,
    CONTACT_UPDATED,
    TrackingEvent,
    format_time,
)
from streams.models.outputs import (
    CONTACT_FORGOTTEN,
    ENGINE_SOURCE,
    SCORE_CHANGED,
    THRESHOLD_CROSSED,
    THRESHOLD_DROPPED,
    Cause,
    Output,
    alert_data,
)
from streams.models.plan_versions import Change, PlanHistory, PlanVersion
from streams.models.plans import (
    BehaviourRule,
    InactivityRule,
    Plan,
    PlanSet,
    Reaction,
    Threshold,
)
from streams.models.times import END
from streams.scoring.state import (
    AWARD_LIMIT,
    WINDOW_LIMIT,
    Award,
    ContactState,
    Folded,
    PlanState,
    Quiet,
    RecentEvent,
    Window,
    decode_base,
    encode_base,
    event_key,
    has_seen,
    recent_event,
    remember,
    replayed_event,
)

_TIME: Final = 3
"""Where a window's stored event (`RecentEvent`) has its time."""


class Outcome(StrEnum):
    """What happened to an event, for metrics and for the backtest's counts."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    """The event is from before the contact's erasure."""


class Step:
    """A plain class, not a named tuple: one is made per event, and the compiled core makes
    one of these ten times faster."""

    __slots__ = ("outcome", "outputs", "state")

    def __init__(self, state: ContactState, outputs: list[Output], outcome: Outcome) -> None:
        self.state: Final = state
        self.outputs: Final = outputs
        self.outcome: Final = outcome


Plans = PlanSet | PlanHistory
"""What the core scores with: one plan set, or a history of versions taking over in turn."""


def score_event(
    state: ContactState | None, event: TrackingEvent, plans: Plans, lateness: float = 0.0
) -> Step:
    """Apply one event to a contact (None for a contact never seen).

    With a history, the contact first switches to every version that took over since it was
    last scored (see `_in_force`), so the event is scored by the version in force at its time.

    `lateness` (seconds) is for drivers whose input is not in time order (the stream): the
    contact keeps a `Window` of its recent history, and an event that arrives after later
    ones, dated no earlier than the window's start, is scored by replaying the window in time
    order (`_late`), so the score is the time-ordered replay's. The window reaches at least
    `lateness` behind the contact's latest event, and holds at most `WINDOW_LIMIT` events. A
    driver that sorts by time (the backtest) gives 0 and keeps no window."""
    if state is None:
        state = ContactState(contact_id=event.subject)
    if state.erased_at is not None and event.time <= state.erased_at:
        return Step(state, [], Outcome.IGNORED)
    key = event_key(event)
    if has_seen(state.seen, key):
        return Step(state, [], Outcome.DUPLICATE)
    if lateness > 0.0 and event.type != CONTACT_ERASED:
        clock = state.clock
        if clock is None or event.time >= clock:
            window = _slide(state, event.time, lateness, plans)
            step = _score(state, event, key, plans)
            window.events.append(recent_event(event))
            return step
        if state.window is not None:
            return _late(state, event, plans, state.window, clock)
    return _score(state, event, key, plans)


def _score(state: ContactState, event: TrackingEvent, key: bytes, plans: Plans) -> Step:
    """Apply an event as it comes: in time order this is exact; a late event without a window
    is scored against the state as it is (see "What a late event does" in docs/plans.md)."""
    state.stored = None
    outputs: list[Output] = []
    event_type = event.type
    time = event.time
    plan_set = _in_force(state, time, plans, outputs) if isinstance(plans, PlanHistory) else plans
    if state.first_seen is None or time < state.first_seen:
        state.first_seen = time
    _prune_plans(state, plan_set)
    _advance(state, time, plan_set, outputs)
    if event_type == CONTACT_ERASED:
        return Step(_erase(state, event, outputs), outputs, Outcome.APPLIED)
    state.seen = remember(state.seen, key)
    old_fit: dict[str, tuple[int, ...]] = {}
    if event_type == CONTACT_UPDATED:
        old_fit = {plan.name: _fit(plan, state) for plan in plan_set}
        state.attributes = _merged_attributes(state, event)
        state.fit = {}
    elif state.last_activity is None or time > state.last_activity:
        state.last_activity = time
    for reaction in plan_set.reactions(event_type):
        _score_plan_event(state, reaction, event, old_fit.get(reaction.plan.name), outputs)
    return Step(state, outputs, Outcome.APPLIED)


def apply(
    state: ContactState | None, event: TrackingEvent, plans: Plans
) -> tuple[ContactState, list[Output]]:
    """`score_event` without the outcome: the core's API as the design states it."""
    step = score_event(state, event, plans)
    return step.state, step.outputs


def advance(state: ContactState, now: float, plans: Plans) -> tuple[ContactState, list[Output]]:
    """Let time pass up to `now`: award expiries and inactivity deadlines fire at their own time,
    and plan versions take over at theirs."""
    outputs: list[Output] = []
    state.stored = None
    if state.first_seen is not None:
        plan_set = (
            _in_force(state, now, plans, outputs) if isinstance(plans, PlanHistory) else plans
        )
        _prune_plans(state, plan_set)
        _advance(state, now, plan_set, outputs)
    return state, outputs


def next_deadline(state: ContactState, plans: Plans) -> float | None:
    """When `advance` next has something to do for this contact, or None: a deadline of its
    plans, or the next plan version taking over."""
    if state.first_seen is None:
        return None
    due: float | None = None
    if isinstance(plans, PlanHistory):
        due = _next_switch(state, plans)
        plan_set = plans_for(state, plans)
    else:
        plan_set = plans
    for plan in plan_set:
        plan_state = state.plans.get(plan.name)
        candidate = (
            min((state.first_seen + rule.after for rule in plan.inactivity), default=inf)
            if plan_state is None
            else _next_due(plan, plan_state)
        )
        if candidate != inf and (due is None or candidate < due):
            due = candidate
    return due


def plans_for(state: ContactState, history: PlanHistory) -> PlanSet:
    """The plan set a contact is scored with now: its version's, or the latest for a version
    the history does not know (what `GET /contacts/{id}` shows it with)."""
    index = _version_index(state, history)
    return history.versions[-1 if index is None else index].plans


def current_score(plan: Plan, state: ContactState) -> int:
    """The contact's score in a plan now (also for a plan it has no state in yet)."""
    plan_state = state.plans.get(plan.name)
    if plan_state is None:
        return plan.clamp(sum(_fit(plan, state)))
    return plan.clamp(_raw_score(plan_state, _fit(plan, state)))


def contact_view(state: ContactState, plans: PlanSet) -> dict[str, Any] | None:
    """What `GET /contacts/{id}` shows: scores, reached thresholds, breakdowns; None if erased."""
    if state.first_seen is None:
        return None
    view: dict[str, Any] = {}
    for plan in plans:
        score = current_score(plan, state)
        plan_state = state.plans.get(plan.name) or PlanState(score=score)
        view[plan.name] = {
            "score": score,
            "thresholds_reached": [t.name for t in plan.thresholds if score >= t.score],
            "breakdown": _breakdown(plan, plan_state, state),
        }
    return {
        "contact_id": state.contact_id,
        "plans": view,
        "attributes": state.attributes,
        "last_activity": None if state.last_activity is None else format_time(state.last_activity),
    }


# --- plan versions ---------------------------------------------------------------------------


def rescore(
    old: ContactState | None,
    old_plans: PlanSet,
    rebuilt: ContactState,
    version: PlanVersion,
    at: float,
) -> tuple[ContactState, list[Output]]:
    """Replace a contact's state by `rebuilt`, its retained history replayed from scratch with
    `version`'s plans (`change: rescore`), advanced to `at`.

    The outputs are what changed for the contact's readers: a score update per plan whose
    score differs, and an alert per threshold entered or left; none for a threshold the contact
    stays above. The rebuild's own outputs happened in a history that was never sent.

    `old` is compared as it is: a caller advances it to just before `at` first (with the
    history, so that old deadlines fire under the old rules), as the backtest does, and gives
    `plans_for(old, history)` as `old_plans`."""
    before = {} if old is None else _scores_before(old, old_plans)
    rebuilt, _ = advance(rebuilt, at, version.plans)
    rebuilt.plan_version = version.label
    rebuilt.window = None  # its base predates the rebuild: late events start a window anew
    rebuilt.stored = None
    outputs: list[Output] = []
    if rebuilt.first_seen is None:  # erased, or nothing retained: no score to report
        return rebuilt, outputs
    cause = Cause(at, (), None, version.label, True)
    for plan in version.plans:
        plan_state = rebuilt.plans.get(plan.name) or _plan_state(rebuilt, plan)
        previous, reached = before.get(plan.name, (plan.clamp(0), ()))
        _report_switch(rebuilt, plan, plan_state, previous, reached, cause, outputs)
    return rebuilt, outputs


def _in_force(
    state: ContactState, time: float, history: PlanHistory, outputs: list[Output]
) -> PlanSet:
    """Switch the contact to every version that took over since it was last scored, and return
    the plan set in force for it at `time` (or at its clock, when that is later: a contact
    never goes back to an older version).

    Each switch happens at the version's start: the old version's deadlines before it fire
    first. A contact whose version the history does not know (scored with another file before
    a restart) switches at `time`, without the old rules, which are gone. A `rescore` version
    is not switched to by time: the contact keeps the version before it until the driver
    replaces its state with the rebuilt one (`rescore`), so no forward outputs come first."""
    clock = state.clock
    moment = time if clock is None or time > clock else clock
    target = history.index_at(moment)
    version = history.versions[target]
    if clock is not None and state.plan_version == version.label and clock >= history.start(target):
        return version.plans  # already on it (nearly every call): no search
    if state.first_seen is None:  # nothing scored yet: it starts with the version in force
        state.plan_version = version.label
        return version.plans
    current = _version_index(state, history)
    if current is None:
        _switch(state, None, version, moment, outputs)
        return version.plans
    for index in range(current + 1, target + 1):
        if history.versions[index].change is Change.RESCORE:
            target = index - 1  # only the driver's rebuild (`rescore`) takes it past one
            break
        old = history.versions[index - 1].plans
        at = max(history.start(index), state.clock if state.clock is not None else moment)
        _prune_plans(state, old)
        _advance(state, nextafter(at, -inf), old, outputs)
        _switch(state, old, history.versions[index], at, outputs)
    return history.versions[max(current, target)].plans


def _version_index(state: ContactState, history: PlanHistory) -> int | None:
    """The index of the contact's version (it switched to it at or after its start)."""
    return history.index_of(state.plan_version, inf if state.clock is None else state.clock)


def _next_switch(state: ContactState, history: PlanHistory) -> float | None:
    """When the contact next switches version: the next version's start (never for a
    `rescore` version: see `_in_force`), or now (its clock) for a version the history does
    not know."""
    current = _version_index(state, history)
    if current is None:
        return state.clock
    following = current + 1
    if following < len(history.versions) and history.versions[following].change is Change.FORWARD:
        return history.start(following)
    return None


def _switch(
    state: ContactState,
    old_plans: PlanSet | None,
    version: PlanVersion,
    at: float,
    outputs: list[Output],
) -> None:
    """`change: forward` at `at`: awards keep their points (and expiries), also those of rules
    the version removed; attribute points are re-evaluated under the new rules; a removed
    plan is forgotten, a new one starts from the attributes; a quiet period is measured with
    the new `after`, and one already longer than that ends at `at`.

    A contact's score update and alerts say what changed: the score, and the thresholds it
    entered or left (a threshold that moved counts, a score that did not change is not sent).
    Without the old plans (`old_plans` None) thresholds are compared under the new ones."""
    new_plans = version.plans
    before = _scores_before(state, old_plans if old_plans is not None else new_plans)
    if state.clock is None or at > state.clock:
        state.clock = at
    state.fit = {}
    state.plan_version = version.label
    _prune_plans(state, new_plans)
    cause = Cause(at, (), None, version.label)
    for plan in new_plans:
        plan_state = state.plans.get(plan.name)
        if plan_state is not None:
            quiet_ids = {rule.id for rule in plan.inactivity}
            limited = {rule.id for rule in plan.rules if rule.limit is not None}
            plan_state.quiet = {r: q for r, q in plan_state.quiet.items() if r in quiet_ids}
            plan_state.claims = {r: c for r, c in plan_state.claims.items() if r in limited}
        plan_state = _plan_state(state, plan)
        for rule in plan.inactivity:
            quiet = plan_state.quiet[rule.id]
            if not quiet.fired and quiet.anchor + rule.after < at:
                _penalise(plan_state, rule, quiet, at)
        previous, reached = before.get(plan.name, (plan.clamp(0), ()))
        _report_switch(state, plan, plan_state, previous, reached, cause, outputs)
    state.due_bound = None


def _scores_before(
    state: ContactState, plans: PlanSet
) -> dict[str, tuple[int, tuple[Threshold, ...]]]:
    """Per plan, the score last reported and the thresholds it had reached."""
    before = {}
    for plan in plans:
        plan_state = state.plans.get(plan.name)
        score = plan_state.score if plan_state is not None else current_score(plan, state)
        before[plan.name] = (score, tuple(t for t in plan.thresholds if score >= t.score))
    return before


# --- late events ------------------------------------------------------------------------------


def _slide(state: ContactState, time: float, lateness: float, plans: Plans) -> Window:
    """Keep the window reaching `lateness` behind an in-order event at `time`, before it is
    applied: events older than that are folded into the base, or, when nothing recent is
    left, the state as it is becomes the base (one encoding instead of a replay)."""
    horizon = time - lateness
    window = state.window
    if window is None or (
        (not window.events or window.events[-1][_TIME] < horizon)
        and (state.clock is None or state.clock <= horizon)
    ):
        state.window = None
        since = -inf if state.clock is None else state.clock
        window = state.window = Window(encode_base(state), since)
        return window
    events = window.events
    stale = 0
    while stale < len(events) and events[stale][_TIME] < horizon:
        stale += 1
    if len(events) >= WINDOW_LIMIT:
        stale = max(stale, len(events) // 2)
    if stale:
        base = _replayed(decode_base(window.base), events[:stale], plans)
        since = window.since if base.clock is None else base.clock
        window = state.window = Window(encode_base(base), since, events[stale:])
    return window


def _late(
    state: ContactState, event: TrackingEvent, plans: Plans, window: Window, clock: float
) -> Step:
    """Score an event that arrived after later ones: the window's base replayed with its
    events and this one in time order, advanced to the contact's clock. The outputs are the
    differences from what the contact's readers last saw, caused by this event.

    An event older than the window's start is applied to the base as it comes (what it does
    there is "beyond the window" in docs/plans.md), and the window replayed on top of it, so the
    state stays exactly the base plus the window."""
    base = window.base
    events = window.events
    if event.time < window.since:
        step = score_event(decode_base(base), event, plans)
        if step.outcome is not Outcome.APPLIED:
            return Step(state, [], step.outcome)
        base = encode_base(step.state)
    else:
        at = len(events)
        while at > 0 and events[at - 1][_TIME] > event.time:
            at -= 1
        events = [*events[:at], recent_event(event), *events[at:]]
    replayed, _ = advance(_replayed(decode_base(base), events, plans), clock, plans)
    replayed.window = Window(base, window.since, events)
    return Step(replayed, _differences(state, replayed, plans, event), Outcome.APPLIED)


def _replayed(base: ContactState, events: list[RecentEvent], plans: Plans) -> ContactState:
    """A window's base with some of its events applied, in their (time) order."""
    for recent in events:
        base = score_event(base, replayed_event(recent, base.contact_id), plans).state
    return base


def _differences(
    old: ContactState, new: ContactState, plans: Plans, event: TrackingEvent
) -> list[Output]:
    """A score update per plan whose score differs from `old`'s, with the alerts of the
    thresholds crossed; the cause names the rules whose points changed."""
    outputs: list[Output] = []
    plan_set = plans_for(new, plans) if isinstance(plans, PlanHistory) else plans
    for plan in plan_set.active:
        plan_state = new.plans.get(plan.name)
        if plan_state is None:
            continue
        before = old.plans.get(plan.name)
        was = {} if before is None else _breakdown(plan, before, old)
        now = _breakdown(plan, plan_state, new)
        rules = tuple(rule for rule in {**was, **now} if was.get(rule) != now.get(rule))
        plan_state.score = before.score if before is not None else current_score(plan, old)
        _report(new, plan, plan_state, Cause(event.time, rules, event), outputs)
    return outputs


# --- time ------------------------------------------------------------------------------------


def _advance(state: ContactState, now: float, plans: PlanSet, outputs: list[Output]) -> None:
    bound = state.due_bound
    if bound is None or now >= bound:  # else nothing is due, and every plan state is in place
        plan_states = state.plans
        bound = inf
        for plan in plans.active:
            plan_state = plan_states.get(plan.name)
            if plan_state is None or plan_state.ready_for is not plan:
                plan_state = _plan_state(state, plan)
            while (due := _next_due(plan, plan_state)) <= now:
                _fire(state, plan, plan_state, due, outputs)
            bound = min(bound, due)
        state.due_bound = bound
    if state.clock is None or now > state.clock:
        state.clock = now


def _lower_bound(state: ContactState, deadline: float) -> None:
    """A deadline was added: `due_bound` must not be later than it."""
    if state.due_bound is not None and deadline < state.due_bound:
        state.due_bound = deadline


def _next_due(plan: Plan, plan_state: PlanState) -> float:
    """The plan's next deadline, `math.inf` for none."""
    due = plan_state.expiry
    if due is None:
        due = plan_state.expiry = min(
            (award.expires_at for award in plan_state.awards if award.expires_at is not None),
            default=inf,
        )
    quiet = plan_state.quiet
    for rule in plan.inactivity:
        clock = quiet[rule.id]
        if not clock.fired and clock.anchor + rule.after < due:
            due = clock.anchor + rule.after
    return due


def _fire(
    state: ContactState, plan: Plan, plan_state: PlanState, due: float, outputs: list[Output]
) -> None:
    fired: list[str] = []
    kept: list[Award] = []
    for award in plan_state.awards:
        if award.expires_at is not None and award.expires_at <= due:
            if award.rule not in fired:
                fired.append(award.rule)
        else:
            kept.append(award)
    plan_state.awards = kept
    _awards_removed(plan_state)
    for rule in plan.inactivity:
        quiet = plan_state.quiet[rule.id]
        if not quiet.fired and quiet.anchor + rule.after <= due:
            _penalise(plan_state, rule, quiet, due)
            fired.append(rule.id)
    _report(state, plan, plan_state, Cause(time=due, rules=tuple(fired)), outputs)


def _penalise(plan_state: PlanState, rule: InactivityRule, quiet: Quiet, at: float) -> None:
    """An inactivity rule's quiet period ends at `at`: its penalty, or its reset."""
    quiet.fired = True
    if rule.reset:
        _reset(plan_state, at)
    else:
        _add_award(plan_state, Award(rule.id, at, rule.points, None))


# --- events ----------------------------------------------------------------------------------


def _score_plan_event(
    state: ContactState,
    reaction: Reaction,
    event: TrackingEvent,
    old_fit: tuple[int, ...] | None,
    outputs: list[Output],
) -> None:
    """`old_fit` is the plan's attribute points before this event changed the attributes."""
    plan = reaction.plan
    plan_state = state.plans[plan.name]
    clock = state.clock if state.clock is not None else event.time
    triggered: list[str] = []
    for rule in reaction.rules:  # a filter without data conditions costs no call
        if (not rule.when.data or rule.when.matches_data(event)) and _apply_rule(
            state, plan_state, rule, event.time, clock
        ):
            triggered.append(rule.id)
    for inactivity_rule in reaction.inactivity:
        if (not inactivity_rule.of.data or inactivity_rule.of.matches_data(event)) and _rearm(
            state, plan_state, inactivity_rule, event.time, clock
        ):
            triggered.append(inactivity_rule.id)
    if old_fit is not None:
        triggered.extend(
            rule.id
            for rule, old, new in zip(plan.attributes, old_fit, _fit(plan, state), strict=True)
            if old != new
        )
    if not triggered:
        return  # no rule of this plan reacted, so its score cannot have changed
    if len(plan_state.awards) > AWARD_LIMIT:
        _fold(plan, plan_state)
    _report(state, plan, plan_state, Cause(event.time, tuple(triggered), event), outputs)


def _apply_rule(
    state: ContactState, plan_state: PlanState, rule: BehaviourRule, time: float, clock: float
) -> bool:
    """Award (or reset) for one matching rule; False when nothing changed."""
    if rule.reset:
        _reset(plan_state, time)
        return True
    displaced = False
    if rule.limit is not None:
        allowed, displaced = _claim(plan_state, rule, time, clock)
        if not allowed:
            return False
    expires_at = None if rule.expires is None else time + rule.expires
    if (plan_state.reset_at is not None and time < plan_state.reset_at) or (
        expires_at is not None and expires_at <= clock
    ):
        return displaced
    _add_award(plan_state, Award(rule.id, time, rule.points, expires_at))
    if expires_at is not None:
        _lower_bound(state, expires_at)
    return True


def _claim(
    plan_state: PlanState, rule: BehaviourRule, time: float, clock: float
) -> tuple[bool, bool]:
    """Use one of a limited rule's allowances: (allowed, an existing award was displaced).

    Without `per`, the allowance goes to the earliest `count` matching events ever, whatever
    their arrival order: an earlier event arriving late takes the latest claim's place. Resets
    clear points, not claims, so the result does not depend on when a reset arrives. With
    `per`, a late event is exact only through the window (`_late`); see `_fullest`.
    """
    assert rule.limit is not None
    claims = plan_state.claims.get(rule.id)
    if claims is None:  # not `setdefault(rule.id, [])`, which makes a list on every call
        claims = plan_state.claims[rule.id] = []
    per = rule.limit.per
    if per is not None:  # claims are sorted: the window is a slice
        del claims[: bisect.bisect_right(claims, clock - 2 * per)]  # kept for late events
        if time < clock:  # late, without a window (see `score_event`)
            if time < clock - per:  # claims its windows hold may be gone: it cannot be sure
                return False, False
            in_window = _fullest(claims, time, per)
        else:
            in_window = bisect.bisect_right(claims, time) - bisect.bisect_right(claims, time - per)
        if in_window >= rule.limit.count:
            return False, False
        bisect.insort(claims, time)
        return True, False
    if len(claims) < rule.limit.count:
        bisect.insort(claims, time)
        return True, False
    if time >= claims[-1]:
        return False, False
    latest = claims.pop()
    bisect.insort(claims, time)
    awards = plan_state.awards
    for index, award in enumerate(awards):
        if award.rule == rule.id and award.time == latest:
            plan_state.awards = awards[:index] + awards[index + 1 :]  # see `_update`
            _awards_removed(plan_state)
            return True, True
    return True, False


def _fullest(claims: list[float], time: float, per: float) -> int:
    """The most claims in any window of length `per` that holds `time`. A late event scored
    without a window takes an allowance only if every such window has room: it displaces no
    later award (it cannot know which refused events those would free), and no window ever
    holds more than its count. Claims are kept for `2 * per`, so for an event at most `per`
    late every claim of those windows is known."""
    fullest = 0
    later = claims[bisect.bisect_left(claims, time) : bisect.bisect_left(claims, time + per)]
    for end in (time, *later):
        held = bisect.bisect_right(claims, end) - bisect.bisect_right(claims, end - per)
        fullest = max(fullest, held)
    return fullest


def _rearm(
    state: ContactState, plan_state: PlanState, rule: InactivityRule, time: float, clock: float
) -> bool:
    """Move the quiet period's anchor; True when a fired penalty was taken back."""
    quiet = plan_state.quiet[rule.id]
    if time <= quiet.anchor:
        return False
    quiet.anchor = time
    if not quiet.fired or time + rule.after <= clock:
        return False
    quiet.fired = False
    _lower_bound(state, time + rule.after)
    if not rule.revert_on_activity:
        return False
    plan_state.awards = [award for award in plan_state.awards if award.rule != rule.id]
    plan_state.folded.pop(rule.id, None)
    _awards_removed(plan_state)
    return True


def _reset(plan_state: PlanState, time: float) -> None:
    plan_state.awards = [award for award in plan_state.awards if award.time >= time]
    plan_state.folded = {
        rule: folded for rule, folded in plan_state.folded.items() if folded.latest >= time
    }
    _awards_removed(plan_state)
    if plan_state.reset_at is None or time > plan_state.reset_at:
        plan_state.reset_at = time


def _fold(plan: Plan, plan_state: PlanState) -> None:
    """Sum the oldest awards that no expiry or count limit needs one by one."""
    counted = {rule.id for rule in plan.rules if rule.limit is not None and rule.limit.per is None}
    excess = len(plan_state.awards) - AWARD_LIMIT // 2
    kept: list[Award] = []
    for award in sorted(plan_state.awards, key=lambda award: award.time):
        if excess > 0 and award.expires_at is None and award.rule not in counted:
            folded = plan_state.folded.setdefault(award.rule, Folded(0, award.time))
            folded.points += award.points
            folded.latest = max(folded.latest, award.time)
            excess -= 1
        else:
            kept.append(award)
    plan_state.awards = kept  # the same points and expiries: the derived totals still hold


def _merged_attributes(state: ContactState, event: TrackingEvent) -> dict[str, Any]:
    """Last writer wins per attribute by event time; `null` removes the attribute."""
    merged = dict(state.attributes)
    for name, value in event.data["attributes"].items():
        if event.time < state.attribute_times.get(name, event.time):
            continue
        state.attribute_times[name] = event.time
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def _erase(state: ContactState, event: TrackingEvent, outputs: list[Output]) -> ContactState:
    erased_at = max(event.time, state.clock if state.clock is not None else event.time)
    contact_id = state.contact_id
    data = {"contact_id": contact_id, "erased_at": format_time(erased_at)}
    cause = Cause(event.time, (), event)
    outputs.append(Output("update", CONTACT_FORGOTTEN, ENGINE_SOURCE, contact_id, cause, data))
    return ContactState(contact_id=contact_id, erased_at=erased_at)


# --- scores and outputs ----------------------------------------------------------------------


def _plan_state(state: ContactState, plan: Plan) -> PlanState:
    """The contact's state in `plan`, with a clock for each of its inactivity rules."""
    plan_state = state.plans.get(plan.name)
    anchor = state.first_seen if state.first_seen is not None else 0.0
    if plan_state is None:
        plan_state = PlanState(score=plan.clamp(sum(_fit(plan, state))), awarded=0, expiry=inf)
        state.plans[plan.name] = plan_state
    for rule in plan.inactivity:
        if rule.id not in plan_state.quiet:
            plan_state.quiet[rule.id] = Quiet(anchor=max(anchor, state.clock or anchor))
    plan_state.ready_for = plan
    return plan_state


def _prune_plans(state: ContactState, plans: PlanSet) -> None:
    """Forget plans that are no longer active, so a renamed plan leaves no garbage behind."""
    if state.pruned_for is plans:
        return  # only active plans were added since
    for name in [name for name in state.plans if name not in plans.active_names]:
        del state.plans[name]
    state.pruned_for = plans
    state.due_bound = None  # another plan set: its plan states are checked again


def _fit(plan: Plan, state: ContactState) -> tuple[int, ...]:
    """Each attribute rule's points for the contact's current attributes (cached on the state)."""
    points = state.fit.get(plan.name)
    if points is None:
        points = tuple(rule.points_for(state.attributes) for rule in plan.attributes)
        state.fit[plan.name] = points
    return points


def _raw_score(plan_state: PlanState, fit: tuple[int, ...]) -> int:
    awarded = plan_state.awarded
    if awarded is None:
        awarded = sum(award.points for award in plan_state.awards)
        awarded += sum(folded.points for folded in plan_state.folded.values())
        plan_state.awarded = awarded
    return awarded + sum(fit)


def _add_award(plan_state: PlanState, award: Award) -> None:
    """Append an award, keeping the derived total and earliest expiry up to date."""
    plan_state.awards.append(award)
    if plan_state.awarded is not None:
        plan_state.awarded += award.points
    expires_at = award.expires_at
    if expires_at is not None and plan_state.expiry is not None and expires_at < plan_state.expiry:
        plan_state.expiry = expires_at


def _awards_removed(plan_state: PlanState) -> None:
    """After awards or folded points were taken away: the derived totals are recomputed."""
    plan_state.awarded = None
    plan_state.expiry = None


def _breakdown(plan: Plan, plan_state: PlanState, state: ContactState) -> dict[str, int]:
    """Points per rule id, in plan order, leaving out rules that contribute nothing."""
    folded = {rule_id: f.points for rule_id, f in plan_state.folded.items()}
    return _tally(plan, plan_state.awards, folded, _fit(plan, state))


def _tally(
    plan: Plan, awards: list[Award], folded: dict[str, int], fit: tuple[int, ...]
) -> dict[str, int]:
    """In plan order, then, sorted, the rules of an earlier plan version whose awards still
    count (a `forward` change keeps them), so that the breakdown adds up to the raw score."""
    totals: dict[str, int] = folded.copy()
    for award in awards:
        totals[award.rule] = totals.get(award.rule, 0) + award.points
    for rule, points in zip(plan.attributes, fit, strict=True):
        totals[rule.id] = totals.get(rule.id, 0) + points
    breakdown = {rule_id: totals[rule_id] for rule_id in plan.rule_ids if totals.get(rule_id)}
    if len(breakdown) < len(totals):
        for rule_id in sorted(totals.keys() - set(plan.rule_ids)):
            if totals[rule_id]:
                breakdown[rule_id] = totals[rule_id]
    return breakdown


def _report(
    state: ContactState, plan: Plan, plan_state: PlanState, cause: Cause, outputs: list[Output]
) -> None:
    """Emit a score update, and an alert per threshold crossed, when the score changed."""
    previous = plan_state.score
    fit = _fit(plan, state)
    score = plan.clamp(_raw_score(plan_state, fit))
    if score == previous:
        return
    plan_state.score = score
    if cause.time >= END:  # a deadline past year 9999: fail here, in the core, as it always did
        format_time(cause.time)
    update = _update(state, plan, plan_state, score, previous, fit, cause)
    outputs.append(update)
    if score > previous:
        crossed = [t for t in plan.thresholds if previous < t.score <= score]
        _alerts(update, THRESHOLD_CROSSED, crossed, outputs)
    else:
        dropped = [t for t in reversed(plan.thresholds) if previous >= t.score > score]
        _alerts(update, THRESHOLD_DROPPED, dropped, outputs)


def _update(
    state: ContactState,
    plan: Plan,
    plan_state: PlanState,
    score: int,
    previous: int,
    fit: tuple[int, ...],
    cause: Cause,
) -> Output:
    """A score update; its breakdown is taken as it is now and tallied only if the output's
    data is read. The awards as they are now are the first `len(awards)` of the list, not a
    copy (3% of the core): an award list is only ever appended to, and replaced by a new one
    for any other change (`_claim`, `_fire`, `_reset`, `_rearm`, `_fold`)."""
    folded = (
        {rule_id: f.points for rule_id, f in plan_state.folded.items()} if plan_state.folded else {}
    )
    awards = plan_state.awards
    contact_id = state.contact_id
    data = partial(
        _score_data, contact_id, plan, score, previous, cause, awards, len(awards), folded, fit
    )
    return Output("update", SCORE_CHANGED, plan.source, contact_id, cause, data)


def _alerts(
    update: Output, alert_type: str, thresholds: list[Threshold], outputs: list[Output]
) -> None:
    """An alert per threshold, its data that of `update` and the threshold."""
    for threshold in thresholds:
        alert = partial(alert_data, update, threshold.name, threshold.score)
        outputs.append(
            Output(
                "alert",
                alert_type,
                update.source,
                update.contact_id,
                update.cause,
                alert,
                threshold.name,
            )
        )


def _report_switch(
    state: ContactState,
    plan: Plan,
    plan_state: PlanState,
    previous: int,
    reached: tuple[Threshold, ...],
    cause: Cause,
    outputs: list[Output],
) -> None:
    """A plan version's switch: the score update when the score changed, and an alert per
    threshold entered or left (the thresholds themselves may have changed)."""
    fit = _fit(plan, state)
    score = plan.clamp(_raw_score(plan_state, fit))
    plan_state.score = score
    was = {threshold.name for threshold in reached}
    entered = [t for t in plan.thresholds if score >= t.score and t.name not in was]
    now = {t.name for t in plan.thresholds if score >= t.score}
    left = [t for t in reversed(reached) if t.name not in now]
    if score == previous and not entered and not left:
        return
    update = _update(state, plan, plan_state, score, previous, fit, cause)
    if score != previous:
        outputs.append(update)
    _alerts(update, THRESHOLD_CROSSED, entered, outputs)
    _alerts(update, THRESHOLD_DROPPED, left, outputs)


def _score_data(
    contact_id: str,
    plan: Plan,
    score: int,
    previous: int,
    cause: Cause,
    awards: list[Award],
    counted: int,
    folded: dict[str, int],
    fit: tuple[int, ...],
) -> dict[str, Any]:
    """A score update's `data`, from what `_report` kept of the state: the first `counted`
    of `awards`."""
    return {
        "contact_id": contact_id,
        "plan": plan.name,
        "score": score,
        "previous_score": previous,
        "cause": cause.to_json(),
        "breakdown": _tally(plan, awards[:counted], folded, fit),
        "plan_version": plan.version,
    }
