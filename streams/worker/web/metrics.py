"""Prometheus metrics of one worker, all named `leadscore_*`, none labelled by contact.

Labels stay bounded: event types outside the built-in ones and those the plans name are
counted as `other` (producers may send any type), plans and DLQ reasons come from finite sets,
partitions from the topic's partition count. The registry is the worker's own, not the
process-global one, so tests can build several workers in one process; it has the process, GC
and platform collectors that the global one has (`process_*`, `python_gc_*`, `python_info`).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from streams.models.outputs import CONTACT_FORGOTTEN, Output

BUILT_IN_TYPES = frozenset(
    {
        "email.opened",
        "email.clicked",
        "email.replied",
        "page.visited",
        "form.submitted",
        "list.subscribed",
        "list.unsubscribed",
        "contact.updated",
        "contact.erased",
    }
)
OTHER_TYPE = "other"
INVALID_TYPE = "invalid"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
_DELAY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600
)  # fmt: skip
_AGENT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1)


class Metrics:
    """The worker's instruments; gauges about live state are set by `refresh` at scrape time."""

    def __init__(self, known_types: Iterable[str] = ()) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the output and nobody reads them
        self.registry = CollectorRegistry(auto_describe=True)
        self._types = BUILT_IN_TYPES | frozenset(known_types)
        self._consumed: Tally[tuple[str, str]] = Tally()
        self._sent: Tally[tuple[str, str, str, bool]] = Tally()
        r = self.registry
        self.events = Counter(
            "leadscore_events_consumed",
            "Tracking events consumed, by event type and outcome "
            "(applied, duplicate, ignored, dead_lettered).",
            ["type", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "leadscore_events_dead_lettered",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.rerouted = Counter(
            "leadscore_events_rerouted",
            "Input messages consumed on a partition that does not own their key (a producer "
            "not partitioning with murmur2), forwarded to the owner through the rerouted topic.",
            registry=r,
        )
        self.dead_letters_truncated = Counter(
            "leadscore_dead_letters_truncated",
            "Dead letters too large for the dead-letter topic, sent with the first bytes of "
            "the value only (header leadscore.dlq.truncated).",
            registry=r,
        )
        self.scoring_errors = Counter(
            "leadscore_scoring_errors",
            "Exceptions of the scoring core (bugs), by what it was given (event or tick); each "
            "event is also dead-lettered with reason scoring-error.",
            ["input"],
            registry=r,
        )
        self.alerts = Counter(
            "leadscore_alerts_sent",
            "Threshold alerts sent to the sales-alerts topic.",
            ["plan", "type"],
            registry=r,
        )
        self.updates = Counter(
            "leadscore_score_updates_sent",
            "Score updates sent to the score-updates topic.",
            ["plan"],
            registry=r,
        )
        self.erasures = Counter(
            "leadscore_erasures_sent",
            "Erasure notices sent to the score-updates topic (contact.erased applied).",
            registry=r,
        )
        self.event_to_output = Histogram(
            "leadscore_event_to_output_seconds",
            "Event-time lag: from an event's own time (its CloudEvents time, set by the "
            "producer) to its outputs being queued, by the worker's wall clock. Only live "
            "traffic lands in the buckets; replayed or back-filled events land in +Inf. "
            "For the worker's own delay see leadscore_processing_delay_seconds.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.processing_delay = Histogram(
            "leadscore_processing_delay_seconds",
            "From an input message's Kafka timestamp (event or timer tick) to its outputs "
            "being queued to the producer, by the worker's wall clock; messages without "
            "outputs or without a timestamp are not counted.",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.agent_time = Histogram(
            "leadscore_agent_processing_seconds",
            "Time spent processing one consumed message (event or timer tick).",
            buckets=_AGENT_BUCKETS,
            registry=r,
        )
        self.ticks_sent = Counter(
            "leadscore_timer_ticks_sent",
            "Timer ticks sent for contacts with a due deadline.",
            registry=r,
        )
        self.ticks = Counter("leadscore_timer_ticks_processed", "Timer ticks consumed.", registry=r)
        self.timer_changes = Counter(
            "leadscore_timer_score_changes",
            "Score changes made by timers (inactivity penalties and resets, award expiries).",
            ["plan"],
            registry=r,
        )
        self.timer_pass = Histogram(
            "leadscore_timer_pass_seconds",
            "Duration of one timer pass over this worker's partitions.",
            registry=r,
        )
        self.persist = Histogram(
            "leadscore_state_persist_seconds",
            "Duration of making states durable before an offset commit.",
            registry=r,
        )
        self.persisted = Counter(
            "leadscore_states_persisted", "Contact states written at commits.", registry=r
        )
        self.contacts = Gauge(
            "leadscore_contacts", "Contacts in the state of this worker's partitions.", registry=r
        )
        self.at_threshold = Gauge(
            "leadscore_contacts_at_threshold",
            "Contacts of this worker's partitions at or above each threshold of the plans in "
            "force (sum over workers for the cluster's segment sizes).",
            ["plan", "threshold"],
            registry=r,
        )
        self.lag = Gauge(
            "leadscore_consumer_lag",
            "Messages not yet processed, per input partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.commit_lag = Gauge(
            "leadscore_commit_lag",
            "Messages after the group's committed offset, per input partition: what a restart "
            "or a new owner reads again. Unlike the consumer lag, it grows when commits stop.",
            ["topic", "partition"],
            registry=r,
        )
        self.recovering = Gauge(
            "leadscore_recovery_in_progress",
            "1 while table state is being recovered from the changelog.",
            registry=r,
        )
        self.ready = Gauge(
            "leadscore_ready", "1 when the worker is recovered and consuming.", registry=r
        )
        self.rescore = RescoreMetrics(r)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # registers itself on CPython only, as the global one does

    def type_label(self, event_type: str) -> str:
        return event_type if event_type in self._types else OTHER_TYPE

    def consumed(self, type_label: str, outcome: str) -> None:
        """Count one consumed message in `leadscore_events_consumed`, at the next `flush`."""
        self._consumed[(type_label, outcome)] += 1

    def outputs_sent(self, outputs: Iterable[Output], *, timer: bool) -> None:
        """Count outputs sent, at the next `flush`."""
        sent = self._sent
        for output in outputs:
            plan = "" if output.type == CONTACT_FORGOTTEN else str(output.data["plan"])
            sent[(output.kind, output.type, plan, timer)] += 1

    def flush(self) -> None:
        """Add the counts kept since the last flush to their counters.

        Why not count each message in its Prometheus counter at once: each count takes the
        counter's lock and its child look-up, several microseconds per message, where adding
        to a dict costs a fraction of one. The worker flushes after each commit and before
        every scrape, so a scrape always sees every message handled so far."""
        consumed, self._consumed = self._consumed, Tally()
        for (type_label, outcome), count in consumed.items():
            self.events.labels(type_label, outcome).inc(count)
        sent, self._sent = self._sent, Tally()
        for (kind, output_type, plan, timer), count in sent.items():
            if output_type == CONTACT_FORGOTTEN:
                self.erasures.inc(count)
            elif kind == "alert":
                self.alerts.labels(plan, output_type).inc(count)
            else:
                self.updates.labels(plan).inc(count)
                if timer:
                    self.timer_changes.labels(plan).inc(count)

    def set_threshold_counts(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Contacts at or above each (plan, threshold); thresholds not given lose their series
        (a plan version dropped them)."""
        self.at_threshold.clear()
        for (plan, threshold), count in counts.items():
            self.at_threshold.labels(plan, threshold).set(count)

    def set_lag(
        self, lag: Mapping[tuple[str, int], int], commit_lag: Mapping[tuple[str, int], int]
    ) -> None:
        """Both lags by `(topic, partition)`; partitions not given lose their series."""
        for gauge, values in ((self.lag, lag), (self.commit_lag, commit_lag)):
            gauge.clear()
            for (topic, partition), value in values.items():
                gauge.labels(topic, str(partition)).set(value)

    def exposition(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)


class RescoreMetrics:
    """Progress of `change: rescore` rebuilds (`streams.worker.rescore.rebuild`)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.replayed = Counter(
            "leadscore_rescore_events_replayed",
            "Messages of the input and rerouted topics read again by partition rebuilds.",
            registry=r,
        )
        self.rebuilding = Gauge(
            "leadscore_rescore_partitions_rebuilding",
            "Partitions whose retained history is being read and replayed now.",
            registry=r,
        )
        self.seconds = Histogram(
            "leadscore_rescore_rebuild_seconds",
            "Duration of each phase of a partition rebuild: replay (the history up to the "
            "positions at the start, beside live scoring), catch_up (the rest, with the "
            "partition held) and swap (rescoring every contact and sending the changes).",
            ["phase"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.partial = Counter(
            "leadscore_rescore_partial",
            "Partition rebuilds that found part of the history deleted (retention): their "
            "contacts are rescored from the retained events only.",
            registry=r,
        )
        self.missing = Gauge(
            "leadscore_rescore_missing_offsets",
            "Offsets of the input and rerouted topics deleted before the last rebuild of the "
            "partition read them (0: the whole history was there).",
            ["partition"],
            registry=r,
        )
        self.scoring_errors = Counter(
            "leadscore_rescore_scoring_errors",
            "Events the scoring core failed on during a rebuild (a bug, logged): the contact "
            "is rebuilt without them.",
            registry=r,
        )
