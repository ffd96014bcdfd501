"""End-to-end latency: events produced at a fixed rate, their score updates read back.

What is timed is what a downstream system sees: from the moment an event is handed to the
producer to the moment a consumer of `score-updates` (or `sales-alerts`) has read the first
output whose `cause.event_id` is that event's id. Both clocks are this process's
`perf_counter`, so no clock skew enters. Events that change no score produce no output and
are counted, not timed.

The producer paces itself against the schedule (event i at start + i / rate) rather than
sleeping a fixed gap after each send, so the rate holds even when a send is slow.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.harness import encode
from streams.kafka.client import PRODUCER_DEFAULTS
from streams.kafka.security import KafkaConnection
from streams.models.events import TrackingEvent


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (p99 of 100 values is the 99th)."""
    if not ordered:
        raise ValueError("no values")
    # Rounded first: 0.07 * 100 is 7.000000000000001 in floating point, whose ceiling is 8.
    rank = max(1, math.ceil(round(fraction * len(ordered), 9)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """One fixed-rate phase: how many events went out, how many had an output, and when."""

    rate: float
    achieved_rate: float
    sent: int
    with_output: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _OutputReader(threading.Thread):
    """Reads the output topics from their current ends and notes when each cause arrived."""

    def __init__(self, bootstrap: str, topics: Sequence[str], sent_at: dict[str, float]) -> None:
        super().__init__(name="latency-reader", daemon=True)
        self._sent_at = sent_at
        self.arrived: dict[str, float] = {}
        self._stop_reading = threading.Event()
        self.reading = threading.Event()
        """Set once the first fetch has returned: outputs are being read from then on."""
        self._consumer = Consumer(
            KafkaConnection(bootstrap).librdkafka(
                {
                    "group.id": f"bench-latency-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    # librdkafka's 500 ms default held the first outputs of a phase back that
                    # long: partitions join the fetch one by one, after a long poll returns.
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        assignment = []
        for topic in topics:
            metadata = self._consumer.list_topics(topic, timeout=30)
            for partition in metadata.topics[topic].partitions:
                tp = TopicPartition(topic, partition)
                high = self._consumer.get_watermark_offsets(tp, timeout=30)[1]
                assignment.append(TopicPartition(topic, partition, high))
        # Explicit offsets read before the first event is sent: nothing can be missed.
        self._consumer.assign(assignment)

    def run(self) -> None:
        try:
            while not self._stop_reading.is_set():
                batch = self._consumer.consume(1000, 0.05)
                self.reading.set()
                for message in batch:
                    arrived = time.perf_counter()
                    value = message.value()
                    if message.error() or not value:
                        continue
                    cause = orjson.loads(value).get("data", {}).get("cause") or {}
                    event_id = cause.get("event_id")
                    if event_id in self._sent_at and event_id not in self.arrived:
                        self.arrived[event_id] = arrived
        finally:
            self._consumer.close()

    def finish(self) -> None:
        self._stop_reading.set()
        self.join(30)


def measure(
    bootstrap: str,
    events_topic: str,
    output_topics: Sequence[str],
    events: Sequence[TrackingEvent],
    rate: float,
    caught_up: Callable[[], bool],
    settle: float = 1.0,
) -> LatencyResult:
    """Send `events` at `rate`/s; wait until `caught_up()` says the worker committed them all,
    then `settle` seconds more for the last outputs to be fetched; summarise the latencies."""
    messages = [(event.id, *encode(event)) for event in events]  # encoded beforehand
    sent_at: dict[str, float] = {}
    reader = _OutputReader(bootstrap, output_topics, sent_at)
    reader.start()
    # Not idempotent: such a producer queues everything until the broker has given it a
    # producer id, which took up to 500 ms after the producer was created, and that wait
    # belongs to this load generator, not to the system measured.
    producer = Producer(
        KafkaConnection(bootstrap).librdkafka({**PRODUCER_DEFAULTS, "enable.idempotence": False})
    )
    try:
        # Connected and fetching before the clock starts: the first events must not carry
        # the clients' own start-up (connections, metadata), which no running system pays.
        producer.list_topics(events_topic, timeout=30)
        if not reader.reading.wait(30):
            raise RuntimeError("the latency reader did not start fetching within 30 s")
        started = time.perf_counter()
        for number, (event_id, key, value, headers) in enumerate(messages):
            delay = started + number / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent_at[event_id] = time.perf_counter()
            producer.produce(events_topic, value=value, key=key, headers=headers)
            producer.poll(0)
        elapsed = time.perf_counter() - started
        if producer.flush(60):
            raise RuntimeError("latency events still queued after 60 s")
        deadline = time.monotonic() + 300
        while not caught_up():
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not commit the latency events within 300 s")
            time.sleep(0.2)
        time.sleep(settle)
    finally:
        reader.finish()
    latencies = sorted(
        (arrived - sent_at[event_id]) * 1000 for event_id, arrived in reader.arrived.items()
    )
    if not latencies:
        raise RuntimeError("no score update or alert named any of the latency events")
    return LatencyResult(
        rate=rate,
        achieved_rate=len(messages) / elapsed,
        sent=len(messages),
        with_output=len(latencies),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1],
    )
