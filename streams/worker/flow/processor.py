"""The work for one consumed message: decode, call the core, send outputs, keep state.

Kept apart from Faust's consumer so the shell stays thin and each step reads in order. Outputs
are sent before the new state is written: `ContactStates.persist` relies on that order to
know that every output of a durable state was acknowledged.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from faust.types.tuples import Message

from streams.models.errors import scoring_error
from streams.models.events import EventError, TrackingEvent
from streams.models.plan_versions import PlanVersion
from streams.scoring import (
    ContactState,
    Outcome,
    Output,
    PlanSet,
    advance,
    plans_for,
    score_event,
)
from streams.scoring.state import copy_state
from streams.worker.flow.outbox import Outbox
from streams.worker.flow.reroute import Rerouter, read_event
from streams.worker.flow.timers import Timers, decode_tick
from streams.worker.plans.live import LivePlans
from streams.worker.settings import TopicNames
from streams.worker.state.history import DEFAULT_SIZE, Ledger
from streams.worker.state.states import ContactStates, Held
from streams.worker.web.metrics import INVALID_TYPE, Metrics

logger = logging.getLogger(__name__)


class PendingRescores(Protocol):
    """The rebuilds for `change: rescore` (`streams.worker.rescore.rescoring.Rescores`), named by
    what the message path calls: the rebuild sits above it and imports it, not the reverse."""

    @property
    def target(self) -> PlanVersion | None: ...
    async def before(self, partition: int) -> None: ...
    def forget(self, partitions: Iterable[int]) -> None: ...


class Processor:
    """One message at a time, in partition order: the consumer's fetch loop awaits `handle`."""

    def __init__(
        self,
        plans: LivePlans,
        topics: TopicNames,
        states: ContactStates,
        outbox: Outbox,
        timers: Timers,
        metrics: Metrics,
        rerouter: Rerouter,
        clock: Callable[[], float] = time.time,
        history_size: int = DEFAULT_SIZE,
        lateness: float = 0.0,
    ) -> None:
        self._plans = plans
        self._lateness = lateness
        self._history_size = history_size
        self._clock = clock
        self._ticks_topic = topics.ticks
        self._rerouter = rerouter
        self._states = states
        self._outbox = outbox
        self._timers = timers
        self._metrics = metrics
        self.processed: dict[tuple[str, int], int] = {}
        """Last offset processed per (topic, partition), for the lag gauge."""
        self.rescores: PendingRescores | None = None
        """Rebuilds for `change: rescore`, swapped in before a partition's next message."""

    async def handle(self, message: Message) -> None:
        started = time.perf_counter()
        rescores = self.rescores
        if rescores is not None and rescores.target is not None:  # no coroutine when none
            await rescores.before(message.partition)
        if message.topic == self._ticks_topic:
            await self._tick(message)
        else:
            await self._event(message)
        self.processed[(message.topic, message.partition)] = message.offset
        self._metrics.agent_time.observe(time.perf_counter() - started)

    async def _event(self, message: Message) -> None:
        try:
            event, origin = read_event(message, self._rerouter)
        except EventError as error:
            await self._dead_letter(message, error, INVALID_TYPE)
            return
        owner = self._rerouter.owner(message)
        if owner is not None:  # scored by the owner, never here
            await self._rerouter.forward(message, owner)
            return
        partition = message.partition
        self._states.observe_time(partition, event.time)
        held = self._states.get(partition, event.contact_id)
        if held is not None and held.applied_at(origin):
            # Consumed again after a crash: its outputs were acknowledged before the state
            # that includes it became durable (see states.py), so there is nothing to redo.
            self._metrics.consumed(self._metrics.type_label(event.type), Outcome.DUPLICATE)
            return
        try:
            state = None if held is None else self._own(partition, event.contact_id, held)
            step = score_event(state, event, self._plans.history, self._lateness)
        except Exception as error:  # a bug in the core costs this event, not the partition
            logger.exception(
                "scoring failed at %s[%s]@%s; dead-lettered, the contact keeps its state",
                message.topic,
                partition,
                message.offset,
            )
            self._metrics.scoring_errors.labels("event").inc()
            await self._dead_letter(
                message, scoring_error(error), self._metrics.type_label(event.type)
            )
            return
        self._metrics.consumed(self._metrics.type_label(event.type), step.outcome)
        await self._send(step.outputs, message, event)
        if step.outcome is Outcome.APPLIED:
            before = held or Held(step.state)
            after = before.after(
                step.state, origin, self._recorded(before, step.state, step.outputs)
            )
            self._states.put(partition, event.contact_id, after)

    async def _tick(self, message: Message) -> None:
        """Advance one contact to the tick's time. A tick is only a hint: one that cannot be
        used is dropped, and the next timer pass sends another if the deadline is still due."""
        self._metrics.ticks.inc()
        try:  # the timer sends contact ids, which are UTF-8; anything else is not our tick
            contact_id = (message.key or b"").decode()
        except UnicodeDecodeError:
            logger.warning(
                "tick with a non-UTF-8 key at %s[%s]@%s",
                message.topic,
                message.partition,
                message.offset,
            )
            return
        now = self._tick_time(message)
        held = None if now is None else self._states.get(message.partition, contact_id)
        if now is None or held is None:
            self._timers.done(message.partition, contact_id)
            return
        try:
            state, outputs = advance(
                self._own(message.partition, contact_id, held), now, self._plans.history
            )
        except Exception:
            # Not ticked again until the contact's state changes (see `Timers.done`).
            logger.exception(
                "advancing a contact failed at %s[%s]@%s; it keeps its state",
                message.topic,
                message.partition,
                message.offset,
            )
            self._metrics.scoring_errors.labels("tick").inc()
            return
        await self._send(outputs, message, None)
        history = self._recorded(held, state, outputs)
        self._states.put(message.partition, contact_id, Held(state, held.applied, history))

    def _recorded(self, held: Held, state: ContactState, outputs: Sequence[Output]) -> Ledger:
        """The contact's history with `outputs`' score changes, for the plans it is scored
        with now; after `_send`, whose outbox built their data and ids, which the history
        reuses."""
        active = plans_for(state, self._plans.history).active_names
        return held.history.recorded(outputs, self._history_size, active)

    def _own(self, partition: int, contact_id: str, held: Held) -> ContactState:
        """The state the core may change: a copy of the cached one (about 4 µs; a state decoded
        for this call is used as it is), so a failing call leaves the contact as it was."""
        if self._states.cached(partition, contact_id):
            return copy_state(held.state)
        return held.state

    async def _dead_letter(self, message: Message, error: EventError, type_label: str) -> None:
        if await self._outbox.dead_letter(message, error):
            self._metrics.dead_letters_truncated.inc()
        self._metrics.consumed(type_label, "dead_lettered")
        self._metrics.dead_letters.labels(error.reason).inc()

    def _tick_time(self, message: Message) -> float | None:
        """The tick's time, but never later than the partition's clock now.

        After a crash or a rebalance, events are consumed again from the last commit while
        ticks sent before it, stamped with the stream time of events not yet consumed again,
        arrive from their own topic. Advancing a contact that far would fire its deadlines
        before the events that re-arm them; the clock catches up as the events are consumed.
        """
        try:
            sent = decode_tick(message.value)
        except struct.error:
            logger.warning(
                "malformed tick at %s[%s]@%s", message.topic, message.partition, message.offset
            )
            return None
        clock = self._timers.now(message.partition)
        return None if clock is None else min(sent, clock)

    async def _send(
        self, outputs: Sequence[Output], message: Message, event: TrackingEvent | None
    ) -> None:
        if not outputs:
            return
        # Queued to the partition's transaction: visible at the next commit (fencing.py).
        await self._outbox.send(message.partition, outputs)
        self._metrics.outputs_sent(outputs, timer=event is None)
        now = self._clock()
        if message.timestamp is not None and message.timestamp > 0:  # Kafka's -1: none
            self._metrics.processing_delay.observe(max(now - message.timestamp, 0.0))
        if event is not None:
            self._metrics.event_to_output.observe(max(now - event.time, 0.0))


def plan_event_types(plans: PlanSet) -> Iterable[str]:
    """Event types the plans name: bounded, so they may be metric labels."""
    for plan in plans:
        for when in (*(rule.when for rule in plan.rules), *(rule.of for rule in plan.inactivity)):
            yield from when.types or ()
