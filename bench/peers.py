"""Side by side: the leadscore worker and its peer, Quix Streams running the same compiled core.

    .venv/bin/python bench/peers.py [--events 200000] [--contacts 20000] [--rounds 2]

One broker (the embedded one, or `$LEADSCORE_KAFKA_BOOTSTRAP`), one topic preloaded once with
simulated events (binary-mode CloudEvents, 4 partitions, the example plans), and four whole
processes, each in a new consumer group reading it from the start:

1. bare: a confluent-kafka consumer, `consume(1000)` and an orjson decode of every value, which
   commits once it has read every event (a child of this script);
2. quix-alo: Quix Streams (`QUIX`, in a virtual environment of its own, see `quix_python`)
   running `bench/peers_quix.py`, at-least-once with its default 5 s commit interval;
3. quix-eos: the same, exactly-once with a 0.1 s commit interval (the worker's);
4. leadscore: `python -m streams.worker`, as bench/worker.py runs it.

Each is timed end to end, the same way for all: from spawning the process until the group's
committed offsets reach the topic's end offsets (the last event's effect: a framework commits
an offset after the state and outputs of what precedes it). So start-up, the group join and
the last commit are inside every figure. The four runs are alternated, their order rotated
every round; medians over `--rounds`, ratios taken within a round. Results go to
bench/results/peers.json, logs to bench/.data/logs/peers-*.log. Every process started is
stopped by its PID; the broker too, unless it was given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException

from bench.harness import (
    REPO,
    STOP_TIMEOUT,
    BenchError,
    GroupProgress,
    WorkerProcess,
    cpu_seconds,
    create_input_topics,
    delete_topics,
    dying_with_parent,
    load_events,
    metric_sum,
    stop_process,
)
from bench.worker import LOGS, machine
from streams.backtest.simulate import generate
from streams.kafka.broker import broker_from_env
from streams.kafka.security import KafkaConnection
from streams.worker.settings import TopicNames

HERE = Path(__file__).resolve().parent
SEED = 7
QUIX = "quixstreams==3.28.1"
"""The version DESIGN.md measured (section 8)."""
CORE_DEPENDENCIES = ("orjson", "msgpack", "pyyaml", "jsonschema")
"""What `streams.scoring` imports besides the standard library; pins from pyproject.toml."""
RUNS = ("bare", "quix-alo", "quix-eos", "leadscore")
LABELS = {
    "bare": "bare confluent-kafka consumer + JSON decode",
    "quix-alo": "Quix Streams {version} running leadscore's core, at-least-once, 5 s commit",
    "quix-eos": "Quix Streams {version} running leadscore's core, exactly-once, 0.1 s commit",
    "leadscore": "**leadscore worker**",
}
QUIX_SETTINGS = {"quix-alo": ("at-least-once", 5.0), "quix-eos": ("exactly-once", 0.1)}
RUN_TIMEOUT = 900.0
NOT_READY = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the topic")
    parser.add_argument("--contacts", type=int, default=20_000, help="contacts they are of")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the four runs")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "peers.json")
    parser.add_argument("--bare-child", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the bare consumer (runs in a child process) -----------------------------------------------


def consume_to_end(bootstrap: str, topic: str, group: str, expected: int) -> dict[str, float]:
    """Join `group`, read `expected` messages from the start, decode each value, then commit.

    The least any Python consumer of these events does; it commits once, at the end, which is
    when the parent sees it done."""
    consumer = Consumer(
        KafkaConnection(bootstrap).librdkafka(
            {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([topic])
    count = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    while count < expected:
        if time.monotonic() > deadline:
            raise BenchError(f"the bare consumer read {count} of {expected} messages")
        for message in consumer.consume(1000, 1.0):
            if message.error():
                continue
            orjson.loads(message.value() or b"null")
            count += 1
    consumer.commit(asynchronous=False)
    consumer.close()
    return {"events": count, "cpu_seconds": time.process_time()}


# --- Quix's virtual environment ----------------------------------------------------------------


def quix_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """`QUIX` and the core's dependencies as pyproject.toml pins them (its tested bounds)."""
    pins = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    wanted = [
        pin
        for pin in pins
        if re.split(r"[<>=!~\[; ]", pin, maxsplit=1)[0].lower() in CORE_DEPENDENCIES
    ]
    if len(wanted) != len(CORE_DEPENDENCIES):
        raise BenchError(f"pyproject.toml does not pin all of {', '.join(CORE_DEPENDENCIES)}")
    return [QUIX, *wanted]


def quix_python(log: Callable[[str], None]) -> Path:
    """The interpreter of Quix's own virtual environment, made (once) under the cache dir.

    Its own, because Quix pins confluent-kafka below 2.13 and leadscore needs 2.16. Made from
    this interpreter's base Python: the compiled core's extension modules are built for this
    version, and the peer imports them from the checkout (PYTHONPATH)."""
    requirements = quix_requirements()
    cache = Path(os.environ.get("LEADSCORE_CACHE_DIR") or REPO / ".cache")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    venv = cache / f"peers-venv-{QUIX.replace('==', '-')}-py{version}"
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"making {venv} with {', '.join(requirements)}")
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *requirements], check=True, timeout=900
    )
    stamp.write_text(wanted)
    return python


# --- one run -----------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """As `WorkerProcess` does: no LEADSCORE_* setting of the caller's shell changes a run,
    except the choice of the pure-Python core."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEADSCORE_") or k == "LEADSCORE_PURE_PYTHON"
    }


def committed_to_end(progress: GroupProgress, ends: dict[int, int]) -> bool:
    """`progress.caught_up`, and False while the group's coordinator is not ready to answer
    (a new broker's offsets topic loads while the first run starts)."""
    try:
        return progress.caught_up(ends)
    except KafkaException as exception:
        error = exception.args[0]
        if error.retriable() or error.code() in NOT_READY:
            return False
        raise


class Peers:
    """The four runs against one preloaded topic; each returns a plain JSON-able dict."""

    def __init__(self, bootstrap: str, work: Path, args: argparse.Namespace) -> None:
        self.bootstrap = bootstrap
        self.work = work
        self.args = args
        self.prefix = f"peers{uuid.uuid4().hex[:6]}."
        self.topics = TopicNames.with_prefix(self.prefix)

    def log(self, message: str) -> None:
        load = os.getloadavg()[0]
        print(f"[{time.strftime('%H:%M:%S')} load {load:.2f}] {message}", file=sys.stderr)

    def load(self) -> dict[str, Any]:
        create_input_topics(self.bootstrap, self.prefix, self.args.partitions)
        self.log(f"loading {self.args.events:,} events into {self.topics.events}")
        loaded = load_events(
            self.bootstrap,
            self.topics.events,
            generate(self.args.contacts, self.args.events, seed=SEED),
        )
        self.log(f"loaded in {loaded.seconds:.1f} s")
        return {"events": loaded.events, "seconds": loaded.seconds}

    def run(self, name: str, quix: Path, round_: int) -> dict[str, Any]:
        group_name = f"{name}{round_}"
        progress = GroupProgress(self.bootstrap, self.prefix + group_name, self.topics.events)
        try:
            ends = progress.end_offsets()
            if name == "leadscore":
                result = self._leadscore(group_name, progress, ends)
            else:
                result = self._child(name, group_name, quix, progress, ends)
        finally:
            progress.close()
        events = sum(ends.values())
        result |= {
            "events": events,
            "events_per_second": events / result["seconds"],
            "cpu_us_per_event": result["cpu_seconds"] / events * 1e6,
            "load_average": os.getloadavg()[0],
        }
        self.log(
            f"{name}: {result['events_per_second']:,.0f} events/s in {result['seconds']:.1f} s"
        )
        return result

    def _child(
        self, name: str, group_name: str, quix: Path, progress: GroupProgress, ends: dict[int, int]
    ) -> dict[str, Any]:
        """The bare consumer or a Quix app: spawn -> committed at the end; its counts."""
        group = self.prefix + group_name
        if name == "bare":
            events = str(sum(ends.values()))
            command = [sys.executable, __file__, "--bare-child", self.bootstrap]
            command += [self.topics.events, group, events]
        else:
            guarantee, interval = QUIX_SETTINGS[name]
            state_dir = tempfile.mkdtemp(prefix=f"{group_name}-", dir=self.work)
            command = [str(quix), str(HERE / "peers_quix.py"), self.bootstrap]
            command += [self.topics.events, self.topics.alerts, self.topics.updates, group]
            command += [state_dir, guarantee, str(interval)]
        env = child_env() | {"PYTHONPATH": str(REPO)}
        with (LOGS / f"peers-{group_name}.log").open("wb") as log:
            started = time.monotonic()
            process = subprocess.Popen(
                dying_with_parent(command), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log
            )
            try:
                seconds = self._until_committed(process.poll, started, progress, ends)
                if name == "bare":  # it exits by itself once it has committed
                    process.wait(STOP_TIMEOUT)
                cpu = None if process.poll() is not None else cpu_seconds(process.pid)
            finally:
                code = stop_process(process)
        out = process.stdout.read() if process.stdout else b""
        if code != 0:
            raise BenchError(f"{name} exited with {code}: see {log.name}")
        counts: dict[str, float] = json.loads(out.splitlines()[-1])
        return {"seconds": seconds, "cpu_seconds": cpu or counts.pop("cpu_seconds")} | counts

    def _leadscore(
        self, app_id: str, progress: GroupProgress, ends: dict[int, int]
    ) -> dict[str, Any]:
        data_dir = Path(tempfile.mkdtemp(prefix=f"{app_id}-", dir=self.work))
        worker = WorkerProcess(
            self.bootstrap,
            self.prefix,
            app_id,
            data_dir,
            LOGS / f"peers-{app_id}.log",
            self.args.partitions,
        ).start()
        try:

            def exited() -> int | None:
                worker.check_alive()
                return None

            seconds = self._until_committed(exited, worker.started_at, progress, ends)
            cpu = cpu_seconds(worker.pid)
            metrics = worker.metrics()
        finally:
            worker.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "alerts": metric_sum(metrics, "leadscore_alerts_sent_total"),
            "updates": metric_sum(metrics, "leadscore_score_updates_sent_total"),
        }

    def _until_committed(
        self,
        exited: Callable[[], int | None],
        started: float,
        progress: GroupProgress,
        ends: dict[int, int],
    ) -> float:
        """Seconds from `started` until the group has committed every offset; a process that
        exits first (the bare consumer does, once it has committed) is asked once more."""
        deadline = started + RUN_TIMEOUT
        while not committed_to_end(progress, ends):
            if exited() is not None and not committed_to_end(progress, ends):
                raise BenchError(f"{progress.topic}: a run exited before it committed the end")
            if time.monotonic() > deadline:
                raise BenchError(f"{progress.topic} not committed after {RUN_TIMEOUT:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def cleanup(self) -> None:
        delete_topics(self.bootstrap, self.prefix)


# --- results -----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians per run; ratios taken within each round (the machine is shared, and a round's
    runs saw the most similar load), then their medians."""
    return {
        "events_per_second": {
            name: median([r[name]["events_per_second"] for r in rounds]) for name in RUNS
        },
        "cpu_us_per_event": {
            name: median([r[name]["cpu_us_per_event"] for r in rounds]) for name in RUNS
        },
        "to_bare": {
            name: median(
                [r[name]["events_per_second"] / r["bare"]["events_per_second"] for r in rounds]
            )
            for name in RUNS
        },
        "leadscore_to_quix_eos": median(
            [
                r["leadscore"]["events_per_second"] / r["quix-eos"]["events_per_second"]
                for r in rounds
            ]
        ),
        "leadscore_to_quix_alo": median(
            [
                r["leadscore"]["events_per_second"] / r["quix-alo"]["events_per_second"]
                for r in rounds
            ]
        ),
    }


def render_table(summary: dict[str, Any], version: str) -> str:
    rows = ["| | events/s | ratio to bare | CPU µs/event |", "|---|---:|---:|---:|"]
    for name in RUNS:
        label = LABELS[name].format(version=version)
        rows.append(
            f"| {label} | {summary['events_per_second'][name]:,.0f} "
            f"| {summary['to_bare'][name]:.3f} | {summary['cpu_us_per_event'][name]:.0f} |"
        )
    rows.append("")
    rows.append(
        f"leadscore to Quix exactly-once: {summary['leadscore_to_quix_eos']:.2f}; "
        f"to Quix at-least-once: {summary['leadscore_to_quix_alo']:.2f}"
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_child:
        bootstrap, topic, group, expected = args.bare_child
        print(json.dumps(consume_to_end(bootstrap, topic, group, int(expected))))
        return 0
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_before = os.getloadavg()
    rounds: list[dict[str, dict[str, Any]]] = []
    with (
        tempfile.TemporaryDirectory(prefix="leadscore-peers-") as work,
        broker_from_env() as bootstrap,
    ):
        peers = Peers(bootstrap, Path(work), args)
        quix = quix_python(peers.log)
        try:
            loaded = peers.load()
            for round_ in range(args.rounds):
                order = RUNS[round_ % len(RUNS) :] + RUNS[: round_ % len(RUNS)]
                peers.log(f"round {round_ + 1} of {args.rounds}: {', '.join(order)}")
                rounds.append({name: peers.run(name, quix, round_) for name in order})
        finally:
            peers.cleanup()
    summary = summarize(rounds)
    version = QUIX.split("==")[1]
    results = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {
            "events": args.events,
            "contacts": args.contacts,
            "partitions": args.partitions,
            "rounds": args.rounds,
            "quix": QUIX,
            "measured": "spawn -> the group's committed offsets reach the end offsets",
        },
        "load": loaded,
        **summary,
        "rounds": rounds,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(render_table(summary, version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
