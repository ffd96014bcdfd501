"""What the worker benchmark drives: worker processes, topics, consumer-group progress, /proc.

Kept apart from `bench/worker.py` so that the orchestration there reads as the list of
measurements, and so that the pieces can be tested on their own (tests/bench/).

Every wait here polls a condition with a deadline; every process started here is stopped by
its PID (SIGTERM, then SIGKILL after a timeout), and dies with this process if this process
is killed (parent-death signal), so a benchmark interrupted at any point leaves no worker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import faust
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.broker import free_ports
from streams.kafka.client import PRODUCER_DEFAULTS, binary_message
from streams.kafka.security import KafkaConnection
from streams.models.events import TrackingEvent
from streams.worker.app import ROCKSDB_OPTIONS
from streams.worker.settings import TopicNames
from streams.worker.state.store import ContactTable

REPO = Path(__file__).resolve().parents[1]
PLANS = REPO / "schemas" / "examples" / "plans.yaml"
READY_TIMEOUT = 300.0
STOP_TIMEOUT = 60.0

T = TypeVar("T")


class BenchError(RuntimeError):
    """A measurement could not be taken (a worker died, a deadline passed); says why."""


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    step: float,
    *,
    error: type[Exception] = BenchError,
) -> T:
    """Poll `condition` every `step` seconds until it returns something truthy.

    Also the tests' wait (tests/worker/harness.py), hence `error`: a missed deadline is a
    `BenchError` here, where it means no measurement, and an `AssertionError` in a test.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, for a worker's web server (tests too)."""
    return free_ports(1)[0]


def dying_with_parent(command: list[str]) -> list[str]:
    """`command`, run so that the kernel SIGKILLs it when the benchmark process dies.

    `setpriv --pdeathsig` sets the flag and execs the command (same PID). Not a `preexec_fn`:
    librdkafka's threads run in this process, and Python code between fork and exec can
    deadlock on a lock one of them held. Without setpriv, the `finally` blocks still stop
    every worker unless this process is killed outright.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command


# --- the worker process ------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body); 0 when nothing answers yet (the worker is still starting)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition to {'name{label="v",...}': value}, labels as exposed."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def metric_sum(metrics: dict[str, float], name: str, *label_filters: str) -> float:
    """Sum of every series of `name` whose labels contain all `label_filters` (`k="v"`)."""
    return sum(
        value
        for series, value in metrics.items()
        if (series == name or series.startswith(name + "{"))
        and all(f in series for f in label_filters)
    )


@dataclass
class WorkerProcess:
    """One `python -m streams.worker` (the `leadscore worker` command) with its own port,
    data dir and log. `app_id` names the consumer group and the changelog: a new id starts
    from nothing, the same id with an empty data dir recovers from the changelog."""

    bootstrap: str
    prefix: str
    app_id: str
    data_dir: Path
    log_path: Path
    partitions: int
    clock: str = "event"
    timer_interval: float = 10.0
    source: Path = REPO
    """The checkout the worker runs from (bench/trees.py compares several)."""
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    """`time.monotonic()` when the process was spawned."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def group(self) -> str:
        return f"{self.prefix}{self.app_id}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError("the worker is not running")
        return self.process.pid

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "streams.worker",
            "--plans", str(PLANS),
            "--bootstrap", self.bootstrap,
            "--partitions", str(self.partitions),
            "--data-dir", str(self.data_dir),
            "--web-port", str(self.web_port),
            "--topic-prefix", self.prefix,
            "--app-id", self.app_id,
            "--clock", self.clock,
            "--timer-interval", str(self.timer_interval),
        ]  # fmt: skip

    def start(self) -> WorkerProcess:
        # Flags only: a LEADSCORE_* variable of the caller's shell must not change the setup,
        # except the choice of the pure-Python core (streams/compiled.py).
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LEADSCORE_") or k == "LEADSCORE_PURE_PYTHON"
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                dying_with_parent(self.command()),
                cwd=self.source,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(
                f"worker {self.process.pid} exited with {self.process.returncode}:\n"
                + self.log_tail()
            )

    def ready(self) -> bool:
        self.check_alive()
        return http_get(self.url + "/readyz", timeout=2.0)[0] == 200

    def wait_serving(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the web server answers: the app has started, recovery has not yet."""

        def serving() -> bool:
            self.check_alive()
            return http_get(self.url + "/healthz", timeout=2.0)[0] == 200

        wait_for(serving, timeout, f"worker {self.pid} to serve HTTP", 0.05)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Seconds from spawn to the first 200 of /readyz."""
        wait_for(self.ready, timeout, f"worker {self.pid} to be ready", 0.05)
        return time.monotonic() - self.started_at

    def metrics(self) -> dict[str, float]:
        """The worker's Prometheus metrics; empty while its web server is not up yet."""
        self.check_alive()
        status, body = http_get(self.url + "/metrics")
        return parse_metrics(body.decode()) if status == 200 else {}

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """`stop_process`; None if it was never started."""
        return None if self.process is None else stop_process(self.process, timeout)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM by PID, SIGKILL if it has not exited after `timeout`; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def running(workers: Iterable[WorkerProcess]) -> Iterator[list[WorkerProcess]]:
    """Start the workers; stop every one of them on leaving, whatever happened."""
    started: list[WorkerProcess] = []
    try:
        for worker in workers:
            started.append(worker.start())
        yield started
    finally:
        for worker in started:
            worker.stop()


def contact_table(datadir: str, app_id: str, partitions: int) -> ContactTable:
    """The worker's contact table in `datadir`, with its RocksDB options, for in-process
    measurements; no broker (Faust's store needs only an app configuration)."""
    app = faust.App(app_id, store="rocksdb://", datadir=datadir)
    return ContactTable(
        app,
        name="contacts",
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        options=ROCKSDB_OPTIONS,
    )


# --- /proc and the disk ------------------------------------------------------------------------


def proc_status_bytes(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/PID/status in bytes: VmRSS (now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"/proc/{pid}/status has no {field_name}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads, from /proc/PID/stat.

    CPU time per event is the number that other load on a shared machine disturbs least:
    a worker that waits for a core is slower in wall time but not in CPU time.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk under `path`, as `du` counts them (blocks, not file sizes)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


# --- topics and progress -----------------------------------------------------------------------


def create_input_topics(bootstrap: str, prefix: str, partitions: int) -> TopicNames:
    """The topics every worker of a prefix shares, so events can be loaded before any starts
    (each app creates its own ticks topic)."""
    topics = TopicNames.with_prefix(prefix)
    specs = [TopicSpec(topics.events, partitions)]
    specs += [
        TopicSpec(name, partitions, copartitioned=False)
        for name in (topics.alerts, topics.updates, topics.dead_letters)
    ]
    ensure_topics(bootstrap, specs)
    return topics


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Remove every topic under `prefix` (matters on an external broker, which stays up)."""
    admin = AdminClient(KafkaConnection(bootstrap).librdkafka())
    names = [name for name in admin.list_topics(timeout=30).topics if name.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()


@dataclass(frozen=True, slots=True)
class Loaded:
    """What `load_events` put on the topic."""

    events: int
    last_time: float
    """Largest event time: later phases continue the stream from there."""
    seconds: float


WireHeaders = list[tuple[str, str | bytes | None]]


def encode(event: TrackingEvent) -> tuple[bytes, bytes, WireHeaders]:
    """The binary-mode message `EventPublisher` would send, typed as confluent-kafka takes it."""
    key, value, headers = binary_message(event)
    wire: WireHeaders = list(headers)
    return key, value, wire


def load_events(bootstrap: str, topic: str, events: Iterable[TrackingEvent]) -> Loaded:
    """Produce binary-mode CloudEvents as `EventPublisher` does (murmur2), only batched harder:
    loading speed is not under test, and a bigger linger lets the load finish sooner."""
    config = {**PRODUCER_DEFAULTS, "linger.ms": 50, "queue.buffering.max.messages": 500_000}
    producer = Producer(KafkaConnection(bootstrap).librdkafka(config))
    started = time.perf_counter()
    count, last_time = 0, 0.0
    for event in events:
        key, value, headers = encode(event)
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        last_time = max(last_time, event.time)
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise BenchError(f"could not load {topic}: messages still queued after 120 s")
    return Loaded(count, last_time, time.perf_counter() - started)


def topic_span(bootstrap: str, topic: str) -> int:
    """Sum over partitions of high minus low watermark: the messages a reader from the start
    goes through (an upper bound on a compacted topic, whose gaps it skips)."""
    consumer = Consumer(KafkaConnection(bootstrap).librdkafka({"group.id": "bench-watermarks"}))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        span = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
            span += high - low
        return span
    finally:
        consumer.close()


class GroupProgress:
    """Committed offsets of a consumer group on one topic, read without joining the group."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(
            KafkaConnection(bootstrap).librdkafka({"group.id": group, "enable.auto.commit": False})
        )
        metadata = self._consumer.list_topics(topic, timeout=30)
        self.partitions = sorted(metadata.topics[topic].partitions)

    def end_offsets(self) -> dict[int, int]:
        return {
            p: int(self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), 30)[1])
            for p in self.partitions
        }

    def committed(self) -> dict[int, int]:
        """Next offset to consume per partition as committed; -1001 (invalid) for none yet."""
        wanted = [TopicPartition(self.topic, p) for p in self.partitions]
        return {tp.partition: tp.offset for tp in self._consumer.committed(wanted, timeout=30)}

    def caught_up(self, ends: dict[int, int]) -> bool:
        committed = self.committed()
        return all(committed[p] >= end for p, end in ends.items() if end > 0)

    def close(self) -> None:
        self._consumer.close()
