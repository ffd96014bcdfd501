"""`leadscore dlq replay`: send dead letters back to the input once their cause is fixed.

A dead letter is the original message (key, value, headers) plus the worker's
`leadscore.dlq.*` headers (`outbox.dead_letter_headers`). Replaying re-publishes it to the
input topic with its key and its headers minus the worker's bookkeeping (`leadscore.dlq.*`,
and `leadscore.rerouted.*` of one dead-lettered on the rerouted topic), partitioned with
murmur2 like every leadscore producer (`KeyedProducer`), so it reaches its contact's owner.

What a run reads: from where the previous runs stopped up to the end offsets taken at its
start, so it terminates while the worker keeps dead-lettering. Where runs stopped is kept as
committed offsets of consumer groups named after the worker's own (`<prefix><app-id>`):
`<group>-dlq-replay` for runs over every reason, `<group>-dlq-replay.<reason>` for runs with
`--reason`. A dead letter counts as replayed when it lies below either of its two groups'
offsets, so runs by reason and runs over everything can be mixed without replaying one twice.
Offsets are committed after every re-published message is acknowledged; a crash in between
replays them again on the next run, which the worker's event-id check makes harmless.

A dead letter marked `leadscore.dlq.truncated` holds only part of the original: it is never
replayed, and the report names where the original was consumed. Null header values are
replayed as null. A dead letter whose header names are not UTF-8 (the worker never writes one,
see `dead_letters.sendable_name`) cannot be read by confluent-kafka: it is not replayed, and
the report names it.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
)
from confluent_kafka import TopicPartition as Partition
from confluent_kafka.admin import AdminClient

from streams.kafka.admin import committed_offsets, watermarks
from streams.kafka.client import Headers, KeyedProducer
from streams.kafka.records import HeaderNameError, confluent_headers
from streams.kafka.security import KafkaAccessError, verify_access
from streams.worker.commands.run import ACCESS_TIMEOUT, EXIT_KAFKA, EXIT_TOPICS, EXIT_USAGE
from streams.worker.flow.dead_letters import DLQ_HEADER, TRUNCATED_HEADER
from streams.worker.flow.reroute import REROUTED_HEADER
from streams.worker.settings import (
    CLIENT_OPTIONS,
    ClientSettings,
    SettingsError,
    add_arguments,
    resolve_client,
    setting_name,
)

REASON_HEADER = DLQ_HEADER + "reason"
DROPPED_PREFIXES = (DLQ_HEADER, REROUTED_HEADER)
"""Headers the worker added; a replayed message carries the producer's headers only."""
IDLE_TIMEOUT = 30.0
"""Seconds without a message before a run that has not reached its end offsets gives up."""


class ReplayError(RuntimeError):
    """The dead-letter topic could not be read or replayed; the message says why."""


@dataclass(frozen=True, slots=True)
class Truncated:
    """A dead letter that cannot be replayed whole, and where its original was consumed."""

    partition: int
    offset: int
    origin: str


@dataclass
class ReplayReport:
    """What a run did (or, with `--dry-run`, would do)."""

    replayed: Counter[str] = field(default_factory=Counter)
    already_replayed: int = 0
    other_reasons: Counter[str] = field(default_factory=Counter)
    truncated: list[Truncated] = field(default_factory=list)
    unreadable: list[tuple[int, int]] = field(default_factory=list)
    """(partition, offset) of dead letters whose headers could not be read."""

    def lines(self, dead_letters: str, events: str, dry_run: bool) -> list[str]:
        verb = "would replay" if dry_run else "replayed"
        total = sum(self.replayed.values())
        lines = [f"{verb} {total} dead letter(s) from {dead_letters} to {events}"]
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.replayed.items())]
        if self.already_replayed:
            lines.append(f"skipped {self.already_replayed} replayed by an earlier run")
        if self.other_reasons:
            others = ", ".join(f"{r}: {n}" for r, n in sorted(self.other_reasons.items()))
            lines.append(f"left {sum(self.other_reasons.values())} of other reasons ({others})")
        for item in self.truncated:
            lines.append(
                f"not replayed, truncated: {dead_letters}/{item.partition}@{item.offset} "
                f"(original at {item.origin})"
            )
        for partition, offset in self.unreadable:
            lines.append(
                f"not replayed, header names not UTF-8: {dead_letters}/{partition}@{offset}"
            )
        return lines


def replay_headers(headers: Iterable[tuple[str, bytes | None]]) -> Headers:
    """The headers a replayed message gets: the original ones, without the worker's."""
    return [(name, value) for name, value in headers if not name.startswith(DROPPED_PREFIXES)]


def _header(headers: Sequence[tuple[str, bytes | None]], name: str) -> str | None:
    """The last header named `name` as text; None when there is none or it is null."""
    values = [value for key, value in headers if key == name]
    last = values[-1] if values else None
    return None if last is None else last.decode(errors="replace")


def replay_group(group: str, reason: str | None = None) -> str:
    """The consumer group that records how far runs (for `reason`, or for all) got."""
    return f"{group}-dlq-replay" + (f".{reason}" if reason else "")


class DeadLetterReplay:
    """One run: read the dead-letter topic up to its end offsets at start, re-publish."""

    def __init__(
        self,
        settings: ClientSettings,
        reasons: Sequence[str] = (),
        dry_run: bool = False,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._kafka = settings.kafka
        self._topics = settings.topics
        self._group = settings.group
        self._reasons = frozenset(reasons)
        self._dry_run = dry_run
        self._idle_timeout = idle_timeout
        self._admin = AdminClient(self._kafka.librdkafka())
        self._done: dict[str | None, dict[int, int]] = {}
        """Committed offset per partition of each replay group (None: the all-reasons one)."""
        self._ends: dict[int, int] = {}

    def run(self) -> ReplayReport:
        topic = self._topics.dead_letters
        self._partitions(self._topics.events)  # it must exist: replays never create it
        marks = watermarks(self._kafka, topic, self._partitions(topic))
        ends = self._ends = {p: end for p, (_, end) in marks.items()}
        starts = {p: self._start(p) for p in ends}
        report = ReplayReport()
        producer = None if self._dry_run else KeyedProducer(self._kafka)
        for message in self._read(topic, starts, ends):
            self._handle(message, report, producer)
        if producer is not None:
            producer.flush()
            for reason in self._reasons or {None}:
                self._commit(reason, topic, ends)
        return report

    def _handle(
        self, message: Message, report: ReplayReport, producer: KeyedProducer | None
    ) -> None:
        partition, offset = cast(int, message.partition()), cast(int, message.offset())
        try:
            headers = confluent_headers(message) or []
        except HeaderNameError:
            if offset >= self._threshold("unknown", partition):
                report.unreadable.append((partition, offset))
            return
        reason = _header(headers, REASON_HEADER) or "unknown"
        if self._reasons and reason not in self._reasons:
            report.other_reasons[reason] += 1
            return
        if offset < self._threshold(reason, partition):
            report.already_replayed += 1
            return
        if _header(headers, TRUNCATED_HEADER) is not None:
            origin = "/".join(
                _header(headers, DLQ_HEADER + name) or "?" for name in ("topic", "partition")
            )
            offset_of_origin = _header(headers, DLQ_HEADER + "offset") or "?"
            report.truncated.append(Truncated(partition, offset, f"{origin}@{offset_of_origin}"))
            return
        report.replayed[reason] += 1
        if producer is not None:
            producer.produce(
                self._topics.events, message.key(), message.value(), replay_headers(headers)
            )

    def _partitions(self, topic: str) -> list[int]:
        # All topics, not `topic` alone: asking for a missing topic by name can create it on
        # brokers with auto.create.topics.enable.
        found = self._admin.list_topics(timeout=30).topics.get(topic)
        if found is None or found.error is not None:
            raise ReplayError(
                f"topic {topic} does not exist: check {setting_name('topic_prefix')} and "
                f"{setting_name('bootstrap')}"
            )
        return sorted(found.partitions)

    def _committed(self, reason: str | None) -> dict[int, int]:
        """The offsets a replay group committed on the dead-letter topic (0 where none)."""
        if reason not in self._done:
            topic = self._topics.dead_letters
            group = replay_group(self._group, reason)
            done = {
                p: max(offset, 0)
                for p, offset in committed_offsets(self._kafka, group, topic, self._ends).items()
            }
            stale = {p: offset for p, offset in done.items() if offset > self._ends[p]}
            if stale:
                raise ReplayError(
                    f"consumer group {group} has replayed {topic} up to {stale}, past its end "
                    f"offsets {self._ends}: the topic was deleted and created again. Delete the "
                    f"group (kafka-consumer-groups.sh --delete --group {group}) to replay the "
                    "new topic from its beginning"
                )
            self._done[reason] = done
        return self._done[reason]

    def _threshold(self, reason: str, partition: int) -> int:
        """Dead letters of `reason` below this offset were replayed by an earlier run."""
        return max(self._committed(None)[partition], self._committed(reason)[partition])

    def _start(self, partition: int) -> int:
        if not self._reasons:
            return self._committed(None)[partition]  # the reasons' groups are checked per message
        return min(self._threshold(reason, partition) for reason in self._reasons)

    def _read(
        self, topic: str, starts: Mapping[int, int], ends: Mapping[int, int]
    ) -> Iterable[Message]:
        """Every message from `starts` to `ends` (exclusive), partition by partition order."""
        pending = {p for p in ends if starts[p] < ends[p]}
        if not pending:
            return
        consumer = Consumer(self._consumer_config())
        try:
            consumer.assign(
                [Partition(topic, p, starts[p] or OFFSET_BEGINNING) for p in sorted(pending)]
            )
            idle = 0.0
            while pending:
                message = consumer.poll(1.0)
                if message is None:
                    idle += 1.0
                    if idle >= self._idle_timeout:
                        raise ReplayError(
                            f"{topic}: no message for {self._idle_timeout:.0f} s before the end "
                            f"offsets {dict(ends)} (partitions {sorted(pending)})"
                        )
                    continue
                idle = 0.0
                partition = cast(int, message.partition())
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                        continue
                    raise ReplayError(f"{topic}/{partition}: {error.str()}")
                offset = cast(int, message.offset())
                if offset >= ends[partition]:  # written after the run started
                    pending.discard(partition)
                    continue
                yield message
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
        finally:
            consumer.close()

    def _commit(self, reason: str | None, topic: str, ends: Mapping[int, int]) -> None:
        request = ConsumerGroupTopicPartitions(
            replay_group(self._group, reason),
            [Partition(topic, p, offset) for p, offset in sorted(ends.items())],
        )
        for future in self._admin.alter_consumer_group_offsets([request]).values():
            future.result()

    def _consumer_config(self) -> dict[str, Any]:
        return self._kafka.librdkafka(
            {
                "group.id": replay_group(self._group),  # never joined: offsets are assigned
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",  # below the log start: retention took them
                "enable.partition.eof": True,
            }
        )


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq replay` to the `leadscore` command."""
    dlq = subparsers.add_parser("dlq", help="work with the dead-letter topic")
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    replay = commands.add_parser(
        "replay",
        help="re-publish dead letters to the input topic",
        description="Re-publish the dead letters not replayed yet to the input topic, with "
        "their original key and headers. Options take the worker's flags and variables.",
    )
    add_arguments(replay, CLIENT_OPTIONS)
    replay.add_argument(
        "--reason",
        action="append",
        default=[],
        help="replay only dead letters with this leadscore.dlq.reason (repeatable)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="report what would be replayed; change nothing"
    )
    replay.set_defaults(handler=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    """Replay and print the report; the worker's exit codes: 2 bad settings, 3 a topic
    missing or unreadable, 4 Kafka refused or did not answer."""
    try:
        settings = resolve_client(args)
    except SettingsError as error:
        print(f"leadscore dlq replay: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        verify_access(settings.kafka, ACCESS_TIMEOUT, setting_name)
        report = DeadLetterReplay(settings, args.reason, args.dry_run).run()
    except (KafkaAccessError, ReplayError, KafkaException) as error:
        print(f"leadscore dlq replay: {error}", file=sys.stderr)
        return EXIT_TOPICS if isinstance(error, ReplayError) else EXIT_KAFKA
    for line in report.lines(settings.topics.dead_letters, settings.topics.events, args.dry_run):
        print(line)
    return 0
