"""Driving a real worker process from tests: start, probe, signal, read its topics.

Every wait here is on a condition with a deadline (a port answering, a topic reaching its
watermarks, a counter reaching a value), never a fixed sleep standing in for an assertion.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.harness import free_port, wait_for
from streams.kafka.client import EventPublisher, Mode
from streams.models.events import TrackingEvent
from streams.worker.settings import TopicNames

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_PLANS = REPO / "schemas" / "examples" / "plans.yaml"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25
) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline.

    The benchmark's wait, failing as a test does (`AssertionError`, which `wait_ready` adds
    the worker's log to), with the short interval tests want.
    """
    return wait_for(condition, timeout, what, interval, error=AssertionError)


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


def partition_of(key: str, partitions: int) -> int:
    """Where Faust/aiokafka put `key`: the reference the worker's topics must agree with."""
    every = list(range(partitions))
    partition: int = DefaultPartitioner()(key.encode(), every, every)
    return partition


def key_on_partition(partition: int, partitions: int, stem: str) -> str:
    """A key that hashes to `partition` (to move one partition's stream time, say)."""
    return next(
        f"{stem}-{i}" for i in range(10_000) if partition_of(f"{stem}-{i}", partitions) == partition
    )


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, parsed JSON or text); connection errors give status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status: int = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def series(name: str, **labels: str) -> str:
    """A series' key in `parse_metrics`' result: labels sorted by name."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {series(name, **labels): value}."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        pairs = (pair.split("=", 1) for pair in rest.rstrip("}").split(",") if pair)
        values[series(name, **{k: v.strip('"') for k, v in pairs})] = float(value)
    return values


@dataclass
class WorkerProcess:
    """One `python -m streams.worker` subprocess with its own port, data dir and log file."""

    bootstrap: str
    prefix: str
    data_dir: Path
    log_path: Path
    partitions: int = 3
    clock: str = "event"
    timer_interval: float = 1.0
    plans: Path | None = EXAMPLE_PLANS
    """None: the worker follows the plans topic instead (pass `--plans-topic`)."""
    web_port: int = field(default_factory=free_port)
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    """`LEADSCORE_*` variables the worker gets (all others are removed): a password, say."""
    module: str = "streams.worker"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def topics(self) -> TopicNames:
        return TopicNames.with_prefix(self.prefix)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            self.module,
            *(["--plans", str(self.plans)] if self.plans is not None else []),
            "--bootstrap", self.bootstrap,
            "--partitions", str(self.partitions),
            "--data-dir", str(self.data_dir),
            "--web-port", str(self.web_port),
            "--topic-prefix", self.prefix,
            "--clock", self.clock,
            "--timer-interval", str(self.timer_interval),
            "--session-timeout", "10",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *, wait_ready: bool = True) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}\n{self.log()}")
            return http_get(self.url + "/readyz")[0] == 200

        try:
            wait_until(ready, timeout, "the worker to be ready")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log()}") from None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the worker by PID and wait for it to exit; return its exit code."""
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signum)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise AssertionError(f"worker ignored signal {signum}\n{self.log()}") from None

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self) -> dict[str, float]:
        status, body = http_get(self.url + "/metrics")
        assert status == 200, f"/metrics answered {status}"
        return parse_metrics(body)

    def consumed(self, outcome: str | None = None) -> float:
        """Sum of `leadscore_events_consumed_total`, optionally for one outcome."""
        return sum(
            value
            for name, value in self.metrics().items()
            if name.startswith("leadscore_events_consumed_total{")
            and (outcome is None or f'outcome="{outcome}"' in name)
        )

    def contact(self, contact_id: str) -> tuple[int, Any]:
        return http_get(f"{self.url}/contacts/{contact_id}")

    def score(self, contact_id: str, plan: str = "lead-score") -> int | None:
        """The contact's score in `plan`, or None while it cannot be looked up."""
        status, body = self.contact(contact_id)
        if status != 200:
            return None
        score: int = body["plans"][plan]["score"]
        return score


class TopicReader:
    """Reads a whole topic incrementally (`read_committed`, librdkafka's default);
    `catch_up()` stops at the current watermarks."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.messages: list[Any] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        self._partitions = sorted(metadata.topics[topic].partitions)
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in self._partitions]
        )
        self._next = dict.fromkeys(self._partitions, 0)

    def catch_up(self, timeout: float = 30.0) -> list[Any]:
        ends = {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in self._partitions
        }
        deadline = time.monotonic() + timeout
        while any(self._next[p] < ends[p] for p in self._partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {self.topic} up to {ends}")
            message = self._consumer.poll(0.5)
            if message is not None and not message.error():
                self.messages.append(message)
            # The position, not the last offset received: the worker writes in transactions,
            # whose markers take offsets that no consumer receives (streams/worker/runtime/fencing.py).
            for tp in self._consumer.position([TopicPartition(self.topic, p) for p in self._next]):
                self._next[tp.partition] = max(self._next[tp.partition], tp.offset)
        return self.messages

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(m.value()) for m in self.catch_up()]


def publish(
    bootstrap: str, topic: str, events: Iterable[TrackingEvent], mode: Mode = "binary"
) -> None:
    with EventPublisher(bootstrap, topic, mode=mode) as publisher:
        for event in events:
            publisher.publish(event)
