"""Benchmark of the stream worker on a real Kafka broker, in one command.

    .venv/bin/python bench/worker.py [--events 1000000] [--contacts 100000] [--runs 3] [--quick]

Uses the embedded broker (or `$LEADSCORE_KAFKA_BOOTSTRAP`), loads simulated events once, and
measures, each against the same preloaded topic and in the same run so that ratios compare
like with like on a shared machine:

1. baseline: a bare confluent-kafka consumer decoding every value with orjson (a child
   process), the practical limit for Python here;
2. throughput of one `leadscore worker` process (`python -m streams.worker`), from the first
   event consumed until the group's committed offsets reach the end offsets (a commit comes
   after the states, changelog and outputs of everything before it are durable), and its
   ratio to that run's baseline;
3. latency at fixed rates, event produced -> its score update readable (bench/latency.py);
4. state: the worker's RSS and the data dir's bytes per contact, at `--contacts` and at
   `--large-contacts`;
5. recovery: a fresh worker with an empty data dir, spawn -> /readyz 200, against the cold
   start of a worker with nothing to recover;
6. timers: one timer pass over `--timer-contacts` records with 0%, 0.1% and 1% due
   (in-process, bench/timer_cost.py);
7. scale-out: two worker processes in one group against one;
8. py-spy profiles of a worker under load and of a recovering one (bench/pyspy.py).

Medians over `--runs` runs go to bench/results/worker.json (every run is kept) and
bench/results/worker.md, the raw profiles beside them; worker logs and the measurements so
far (worker.partial.json) to bench/.data/. Every process started is stopped by its PID; the
broker too, unless it was given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench import latency, pyspy, timer_cost
from bench.harness import (
    PLANS,
    READY_TIMEOUT,
    BenchError,
    GroupProgress,
    Loaded,
    WorkerProcess,
    cpu_seconds,
    create_input_topics,
    delete_topics,
    disk_usage,
    load_events,
    metric_sum,
    proc_status_bytes,
    running,
    topic_span,
)
from bench.report import render_markdown
from streams.backtest.simulate import DAY, generate
from streams.kafka.broker import broker_from_env, kafka_version
from streams.kafka.security import KafkaConnection
from streams.worker.settings import TopicNames

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOGS = HERE / ".data" / "logs"
PARTIAL = HERE / ".data" / "worker.partial.json"
SEED = 7
CONSUMED = "leadscore_events_consumed_total"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each part of the benchmark is; `--quick` shrinks all of them."""

    events: int
    contacts: int
    large_events: int
    large_contacts: int
    timer_contacts: int
    latency_seconds: float
    profile_seconds: float


FULL = Sizes(1_000_000, 100_000, 2_000_000, 1_000_000, 1_000_000, 20.0, 60.0)
QUICK = Sizes(100_000, 10_000, 200_000, 100_000, 100_000, 8.0, 20.0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--events", type=int, help="events in the main topic (1,000,000)")
    parser.add_argument("--contacts", type=int, help="contacts of the main topic (100,000)")
    parser.add_argument("--large-events", type=int, help="events of the large topic (2,000,000)")
    parser.add_argument("--large-contacts", type=int, help="contacts, large topic (1,000,000)")
    parser.add_argument("--timer-contacts", type=int, help="records of the timer test (1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported")
    parser.add_argument("--partitions", type=int, default=6, help="topic partitions (6)")
    parser.add_argument(
        "--rates", default="1000,5000", help="latency phases, events/s, comma-separated"
    )
    parser.add_argument("--latency-seconds", type=float, help="length of one latency phase")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep what an interrupted run with the same settings measured, redo the rest",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "worker.json")
    parser.add_argument("--baseline-child", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve_sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    return Sizes(
        events=args.events or base.events,
        contacts=args.contacts or base.contacts,
        large_events=args.large_events or base.large_events,
        large_contacts=args.large_contacts or base.large_contacts,
        timer_contacts=args.timer_contacts or base.timer_contacts,
        latency_seconds=args.latency_seconds or base.latency_seconds,
        profile_seconds=base.profile_seconds,
    )


# --- 1. the baseline (runs in a child process) -------------------------------------------------


def consume_baseline(bootstrap: str, topic: str, expected: int) -> dict[str, float]:
    """Read `expected` messages from the start of `topic`, decode each value, count per key.

    What any Python consumer of these events must do at least; the clock starts at the first
    message, as the worker's does.
    """
    consumer = Consumer(
        KafkaConnection(bootstrap).librdkafka(
            {"group.id": f"bench-baseline-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    per_key: dict[bytes | str | None, int] = {}
    count = 0
    started = cpu_started = 0.0
    deadline = time.monotonic() + 600
    while count < expected:
        if time.monotonic() > deadline:
            raise BenchError(f"the baseline read {count} of {expected} messages in 600 s")
        for message in consumer.consume(1000, 1.0):
            if message.error():
                continue
            if not count:
                started, cpu_started = time.perf_counter(), time.process_time()
            orjson.loads(message.value() or b"null")
            key = message.key()
            per_key[key] = per_key.get(key, 0) + 1
            count += 1
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started  # librdkafka's threads included, as for the worker
    consumer.close()
    return {
        "events": count,
        "seconds": seconds,
        "events_per_second": count / seconds,
        "cpu_us_per_event": cpu / count * 1e6,
    }


# --- the benchmark -----------------------------------------------------------------------------


class Bench:
    """The phases, in the order `run()` calls them; each returns plain JSON-able dicts."""

    def __init__(
        self, bootstrap: str, work: Path, args: argparse.Namespace, measured: dict[str, Any]
    ) -> None:
        self.bootstrap = bootstrap
        self.work = work
        self.args = args
        self.sizes = resolve_sizes(args)
        self.rates = [float(rate) for rate in args.rates.split(",") if rate]
        self.partitions: int = args.partitions
        self.tag = uuid.uuid4().hex[:6]
        self.prefixes: list[str] = []
        self.measured = measured
        self.session_started = time.time()
        self.session: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime()),
            "load_average_before": os.getloadavg(),
            "minutes": 0.0,
        }
        measured.setdefault("sessions", []).append(self.session)

    # --- helpers ---------------------------------------------------------------------------

    def log(self, message: str) -> None:
        load = os.getloadavg()[0]
        print(f"[{time.strftime('%H:%M:%S')} load {load:.2f}] {message}", file=sys.stderr)

    def worker(self, prefix: str, app_id: str, name: str) -> WorkerProcess:
        """A worker with a new, empty data dir of its own."""
        data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        return WorkerProcess(
            self.bootstrap,
            prefix,
            app_id,
            data_dir,
            LOGS / f"{name}.log",
            self.partitions,
        )

    def load(self, name: str, contacts: int, events: int) -> tuple[TopicNames, Loaded]:
        prefix = f"bench{self.tag}-{name}."
        self.prefixes.append(prefix)
        topics = create_input_topics(self.bootstrap, prefix, self.partitions)
        self.log(f"loading {events:,} events of {contacts:,} contacts into {topics.events}")
        loaded = load_events(self.bootstrap, topics.events, generate(contacts, events, seed=SEED))
        self.log(f"loaded in {loaded.seconds:.1f} s")
        self.keep(load_seconds=self.measured.get("load_seconds", {}) | {name: loaded.seconds})
        return topics, loaded

    # --- 1. baseline -----------------------------------------------------------------------

    def baseline(self, topic: str, events: int) -> dict[str, Any]:
        child = [sys.executable, __file__, "--baseline-child", self.bootstrap, topic, str(events)]
        done = subprocess.run(child, check=True, capture_output=True, text=True, timeout=900)
        result: dict[str, Any] = json.loads(done.stdout)
        self.log(f"baseline {result['events_per_second']:,.0f} events/s")
        return result

    # --- 2, 4, 7: throughput ---------------------------------------------------------------

    def throughput(
        self,
        workers: list[WorkerProcess],
        progress: GroupProgress,
    ) -> dict[str, Any]:
        """Time the running `workers` from the first event consumed until every event's
        offset is committed; their CPU time over the same span; what their metrics say."""
        ends = progress.end_offsets()
        events = sum(ends.values())
        ready: dict[int, float] = {}
        first = self._first_consumed(workers, ready)
        cpu_first = [cpu_seconds(worker.pid) for worker in workers]
        deadline = time.monotonic() + max(600.0, events / 500)
        while not progress.caught_up(ends):
            for worker in workers:
                worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{progress.topic} not consumed before the deadline")
            time.sleep(0.2)
        seconds = time.monotonic() - first
        cpu = sum(cpu_seconds(w.pid) - c for w, c in zip(workers, cpu_first, strict=True))
        metrics = [worker.metrics() for worker in workers]
        outcomes: dict[str, float] = {}
        for outcome in ("applied", "duplicate", "ignored", "dead_lettered"):
            outcomes[outcome] = sum(
                metric_sum(m, CONSUMED, f'outcome="{outcome}"') for m in metrics
            )
        return {
            "workers": len(workers),
            "events": events,
            "seconds": seconds,
            "events_per_second": events / seconds,
            "cpu_us_per_event": cpu / events * 1e6,
            "cpu_cores_busy": cpu / seconds,
            "ready_seconds": [ready.get(w.pid) for w in workers],
            "consumed": outcomes,
            "ticks_processed": sum(
                metric_sum(m, "leadscore_timer_ticks_processed_total") for m in metrics
            ),
            "states_persisted": sum(
                metric_sum(m, "leadscore_states_persisted_total") for m in metrics
            ),
            "score_updates": sum(
                metric_sum(m, "leadscore_score_updates_sent_total") for m in metrics
            ),
            "alerts": sum(metric_sum(m, "leadscore_alerts_sent_total") for m in metrics),
            "contacts": sum(metric_sum(m, "leadscore_contacts") for m in metrics),
            "rss_mib": [proc_status_bytes(w.pid, "VmRSS") / MIB for w in workers],
            "peak_rss_mib": [proc_status_bytes(w.pid, "VmHWM") / MIB for w in workers],
            "load_average": os.getloadavg()[0],
        }

    def _first_consumed(self, workers: list[WorkerProcess], ready: dict[int, float]) -> float:
        """The last moment at which no worker had consumed anything yet (conservative)."""
        deadline = time.monotonic() + READY_TIMEOUT
        last_zero = time.monotonic()
        while True:
            probe = time.monotonic()
            consumed = 0.0
            for worker in workers:
                mine = metric_sum(worker.metrics(), CONSUMED)
                # A worker that consumes is ready, even if it got there between two probes.
                if worker.pid not in ready and (mine > 0 or worker.ready()):
                    ready[worker.pid] = time.monotonic() - worker.started_at
                consumed += mine
            if consumed > 0:
                return last_zero
            if probe > deadline:
                raise BenchError("no worker consumed anything before the deadline")
            last_zero = probe
            time.sleep(0.05)

    def single(
        self,
        topics: TopicNames,
        prefix: str,
        app_id: str,
        while_running: Callable[[WorkerProcess, GroupProgress], None] | None = None,
    ) -> dict[str, Any]:
        """One worker through the whole topic; then RSS, and disk once it has stopped."""
        worker = self.worker(prefix, app_id, app_id)
        progress = GroupProgress(self.bootstrap, worker.group, topics.events)
        try:
            with running([worker]):
                result = self.throughput([worker], progress)
                self.log(
                    f"{app_id}: {result['events_per_second']:,.0f} events/s, "
                    f"{result['contacts']:,.0f} contacts, RSS {result['rss_mib'][0]:.0f} MiB"
                )
                if while_running is not None:
                    while_running(worker, progress)
            result["exit_code"] = worker.process.returncode if worker.process else None
            disk = disk_usage(worker.data_dir)
            result["disk_bytes"] = disk
            result["disk_bytes_per_contact"] = disk / max(result["contacts"], 1)
        finally:
            progress.close()
            shutil.rmtree(worker.data_dir, ignore_errors=True)
        return result

    def pair(self, topics: TopicNames, prefix: str, app_id: str) -> dict[str, Any]:
        """Two workers of one group, started together, through the whole topic."""
        workers = [self.worker(prefix, app_id, f"{app_id}-{n}") for n in (1, 2)]
        progress = GroupProgress(self.bootstrap, workers[0].group, topics.events)
        try:
            with running(workers):
                result = self.throughput(workers, progress)
        finally:
            progress.close()
            for worker in workers:
                shutil.rmtree(worker.data_dir, ignore_errors=True)
        self.log(f"{app_id}: {result['events_per_second']:,.0f} events/s with 2 workers")
        return result

    # --- 5. recovery -----------------------------------------------------------------------

    def recovery(
        self, prefix: str, app_id: str, name: str, profile: Path | None = None
    ) -> dict[str, Any]:
        """A new worker of an existing group, empty data dir: spawn -> ready, then check it.

        With `profile`, py-spy samples it from the moment its web server answers (just
        before recovery starts) until it is ready.
        """
        worker = self.worker(prefix, app_id, name)
        summary: dict[str, Any] | None = None
        try:
            with running([worker]):
                if profile is None:
                    seconds = worker.wait_ready()
                else:
                    worker.wait_serving()
                    recorder = pyspy.start(worker.pid, profile)
                    try:
                        seconds = worker.wait_ready()
                    finally:
                        pyspy.stop(recorder)
                    summary = self._profile_summary(profile, seconds)
                cpu = cpu_seconds(worker.pid)
                metrics = worker.metrics()
                rss = proc_status_bytes(worker.pid, "VmHWM") / MIB
        finally:
            shutil.rmtree(worker.data_dir, ignore_errors=True)
        contacts = metric_sum(metrics, "leadscore_contacts")
        changelog = topic_span(self.bootstrap, f"{worker.group}-contacts-changelog")
        self.log(
            f"{name}: recovered {contacts:,.0f} contacts from {changelog:,} changelog "
            f"messages, ready after {seconds:.1f} s"
        )
        result = {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "contacts": contacts,
            "changelog_messages": changelog,
            "peak_rss_mib": rss,
        }
        return result if summary is None else result | {"profile": summary}

    # --- 3. latency ------------------------------------------------------------------------

    def latency(
        self,
        topics: TopicNames,
        loaded: Loaded,
        worker: WorkerProcess,
        progress: GroupProgress,
        session: int = 0,
    ) -> dict[str, list[dict[str, Any]]]:
        """Fixed-rate phases against a caught-up worker, each rate `--runs` times.

        The events continue the loaded stream's time at wall-clock pace, so with the event
        clock only the deadlines that really fall in those seconds fire, as in production.
        `session` numbers the calls on one topic (bench/trees.py makes several): each adds
        its events to the topic, so a later one sends other events (ids the core would take
        for duplicates otherwise), an hour of event time later per session.
        """
        results: dict[str, list[dict[str, Any]]] = {f"{rate:g}": [] for rate in self.rates}
        clock = loaded.last_time + 1.0 + session * 3600.0
        seconds = self.sizes.latency_seconds
        self._wait_quiet(worker)
        for repetition in range(self.args.runs):
            for rate in self.rates:
                events = list(
                    generate(
                        self.sizes.contacts,
                        round(rate * seconds),
                        seed=1000 + session * 1000 + repetition * 10 + len(results[f"{rate:g}"]),
                        start=clock,
                        days=seconds / DAY,
                    )
                )
                clock += seconds + 1.0
                measured = latency.measure(
                    self.bootstrap,
                    topics.events,
                    [topics.updates, topics.alerts],
                    events,
                    rate,
                    lambda: progress.caught_up(progress.end_offsets()),
                )
                worker.check_alive()
                row = measured.to_json() | {"load_average": os.getloadavg()[0]}
                results[f"{rate:g}"].append(row)
                self.log(
                    f"latency at {rate:g}/s: p50 {measured.p50_ms:.0f} ms, "
                    f"p99 {measured.p99_ms:.0f} ms, max {measured.max_ms:.0f} ms"
                )
        return results

    def _wait_quiet(self, worker: WorkerProcess) -> None:
        """Until a whole timer interval passes without a tick: the deadlines that fell due
        during the preload (days of event time in a minute) fire in one burst after it, which
        is catch-up work, not the steady state the latency phases measure."""
        quiet_for = worker.timer_interval + 1.0
        deadline = time.monotonic() + 10 * quiet_for
        ticks, since = -1.0, time.monotonic()
        while time.monotonic() - since < quiet_for:
            if time.monotonic() > deadline:
                raise BenchError(f"worker {worker.pid} still processing ticks after the preload")
            now = metric_sum(worker.metrics(), "leadscore_timer_ticks_processed_total")
            if now != ticks:
                ticks, since = now, time.monotonic()
            time.sleep(0.5)

    # --- 8. profile ------------------------------------------------------------------------

    def profile(
        self, topics: TopicNames, prefix: str, raw: Path = RESULTS / "worker-profile.txt"
    ) -> dict[str, Any]:
        """py-spy on a worker consuming the main topic from its start, for a bounded time."""
        worker = self.worker(prefix, "profiled", "profiled")
        progress = GroupProgress(self.bootstrap, worker.group, topics.events)
        try:
            with running([worker]):
                ends = progress.end_offsets()
                self._first_consumed([worker], {})
                recorder = pyspy.start(worker.pid, raw)
                started = time.monotonic()
                try:
                    while time.monotonic() - started < self.sizes.profile_seconds:
                        worker.check_alive()
                        if progress.caught_up(ends):
                            break
                        time.sleep(0.5)
                finally:
                    pyspy.stop(recorder)
                sampled = time.monotonic() - started
                consumed = metric_sum(worker.metrics(), CONSUMED)
        finally:
            progress.close()
            shutil.rmtree(worker.data_dir, ignore_errors=True)
        return self._profile_summary(raw, sampled) | {"events_consumed": consumed}

    def _profile_summary(self, raw: Path, seconds: float) -> dict[str, Any]:
        with raw.open() as lines:
            summary = pyspy.summarize(lines)
        self.log(f"profile: {summary['samples']} samples in {seconds:.0f} s -> {raw.name}")
        return summary | {"seconds": seconds, "raw": str(raw.relative_to(HERE.parent))}

    # --- everything ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every measurement not yet in `self.measured` (all of them unless `--resume`).

        The units that can be redone on their own, each saved when it is complete: one run
        of the main topic (baseline, two workers, one worker with, in the last run, the
        latency phases, recovery from its changelog), the profile, the large topic (one
        worker, then recoveries from its changelog), the timer passes.
        """
        sizes, runs, done = self.sizes, self.args.runs, self.measured
        per_run: list[dict[str, Any]] = done.setdefault("runs", [])
        latencies: dict[str, list[dict[str, Any]]] = done.setdefault("latency", {})
        want_profile = not self.args.no_profile
        if len(per_run) < runs or (want_profile and "profile" not in done):
            topics, loaded = self.load("main", sizes.contacts, sizes.events)
            main_prefix = self.prefixes[-1]

            def measure_latency(worker: WorkerProcess, progress: GroupProgress) -> None:
                latencies.update(self.latency(topics, loaded, worker, progress))

            for run in range(len(per_run), runs):
                self.log(f"run {run + 1} of {runs}")
                baseline = self.baseline(topics.events, loaded.events)
                pair = self.pair(topics, main_prefix, f"pair{run}")
                # Last, because the latency phase (in the last run) adds events to the topic.
                app_id = f"single{run}"
                with_latency = measure_latency if run == runs - 1 else None
                single = self.single(topics, main_prefix, app_id, with_latency)
                recovered = self.recovery(main_prefix, app_id, f"recover{run}")
                per_run.append(
                    {"baseline": baseline, "single": single, "recovery": recovered, "pair": pair}
                )
                self.keep(runs=per_run, latency=latencies)
            if want_profile and "profile" not in done:
                self.keep(profile=self.profile(topics, main_prefix))

        if "large_recoveries" not in done:
            large_topics, _ = self.load("large", sizes.large_contacts, sizes.large_events)
            large_prefix = self.prefixes[-1]
            large = self.single(large_topics, large_prefix, "large")
            profile_to = RESULTS / "recovery-profile.txt" if want_profile else None
            recoveries = [
                self.recovery(
                    large_prefix, "large", f"recover-large{n}", profile_to if not n else None
                )
                for n in range(runs)
            ]
            self.keep(large=large, large_recoveries=recoveries)

        if "timers" not in done:
            self.log(f"timer passes over {sizes.timer_contacts:,} records")
            self.keep(timers=timer_cost.measure(PLANS, sizes.timer_contacts))

        return summarize(
            sizes=sizes,
            load_seconds=done["load_seconds"],
            per_run=per_run,
            latencies=latencies,
            large=done["large"],
            large_recoveries=done["large_recoveries"],
            timers=done["timers"],
            profile=done.get("profile"),
        )

    def keep(self, **measured: Any) -> None:
        """Save what is measured so far (bench/.data/worker.partial.json): on a shared machine
        a run can be killed an hour in; `--resume` then redoes only what is missing."""
        self.measured.update(measured)
        self.session["minutes"] = round((time.time() - self.session_started) / 60, 1)
        PARTIAL.write_text(json.dumps(self.measured, indent=2) + "\n")

    def cleanup(self) -> None:
        for prefix in self.prefixes:
            delete_topics(self.bootstrap, prefix)


# --- results -----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarize(
    *,
    sizes: Sizes,
    load_seconds: dict[str, float],
    per_run: list[dict[str, Any]],
    latencies: dict[str, list[dict[str, Any]]],
    large: dict[str, Any],
    large_recoveries: list[dict[str, Any]],
    timers: dict[str, Any],
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    """Medians and ratios per measurement; the individual runs stay beside them."""
    baseline = [r["baseline"]["events_per_second"] for r in per_run]
    single = [r["single"]["events_per_second"] for r in per_run]
    pair = [r["pair"]["events_per_second"] for r in per_run]
    cold = [r["single"]["ready_seconds"][0] for r in per_run]
    passes = {p["due_fraction"]: p for p in timers["passes"]}
    return {
        "sizes": {
            "events": sizes.events,
            "contacts": sizes.contacts,
            "large_events": sizes.large_events,
            "large_contacts": sizes.large_contacts,
            "timer_contacts": sizes.timer_contacts,
            "latency_seconds": sizes.latency_seconds,
        },
        "load_seconds": load_seconds,
        "baseline_events_per_second": median(baseline),
        "worker_events_per_second": median(single),
        "worker_to_baseline": median([s / b for s, b in zip(single, baseline, strict=True)]),
        "two_workers_events_per_second": median(pair),
        "two_workers_to_one": median([p / s for p, s in zip(pair, single, strict=True)]),
        "large_worker_events_per_second": large["events_per_second"],
        "cpu_us_per_event": {
            "baseline": median([r["baseline"]["cpu_us_per_event"] for r in per_run]),
            "worker": median([r["single"]["cpu_us_per_event"] for r in per_run]),
            "two_workers": median([r["pair"]["cpu_us_per_event"] for r in per_run]),
            "large": large["cpu_us_per_event"],
        },
        "worker_cores_busy": median([r["single"]["cpu_cores_busy"] for r in per_run]),
        "latency": {
            rate: {
                "p50_ms": median([r["p50_ms"] for r in rows]),
                "p99_ms": median([r["p99_ms"] for r in rows]),
                "max_ms": median([r["max_ms"] for r in rows]),
                "worst_max_ms": max(r["max_ms"] for r in rows),
                "with_output": median([r["with_output"] / r["sent"] for r in rows]),
            }
            for rate, rows in latencies.items()
        },
        "state": [
            {
                "contacts": median([r["single"]["contacts"] for r in per_run]),
                "events": sizes.events,
                "rss_mib": median([r["single"]["rss_mib"][0] for r in per_run]),
                "peak_rss_mib": median([r["single"]["peak_rss_mib"][0] for r in per_run]),
                "disk_bytes_per_contact": median(
                    [r["single"]["disk_bytes_per_contact"] for r in per_run]
                ),
            },
            {
                "contacts": large["contacts"],
                "events": sizes.large_events,
                "rss_mib": large["rss_mib"][0],
                "peak_rss_mib": large["peak_rss_mib"][0],
                "disk_bytes_per_contact": large["disk_bytes_per_contact"],
            },
        ],
        "recovery": [
            {
                "contacts": median([r["recovery"]["contacts"] for r in per_run]),
                "changelog_messages": median(
                    [r["recovery"]["changelog_messages"] for r in per_run]
                ),
                "seconds": median([r["recovery"]["seconds"] for r in per_run]),
                "cold_start_seconds": median(cold),
            },
            {
                "contacts": median([r["contacts"] for r in large_recoveries]),
                "changelog_messages": median([r["changelog_messages"] for r in large_recoveries]),
                "seconds": median([r["seconds"] for r in large_recoveries]),
                "cold_start_seconds": large["ready_seconds"][0],
            },
        ],
        "timers": {
            "contacts": timers["contacts"],
            "passes": [
                {
                    "due": p["due"],
                    "due_fraction": p["due_fraction"],
                    "median_ms": p["median_seconds"] * 1000,
                }
                for p in timers["passes"]
            ],
            "one_percent_to_tenth": passes[0.01]["median_seconds"]
            / passes[0.001]["median_seconds"],
        },
        "profile": profile,
        "recovery_profile": large_recoveries[0].get("profile"),
        "runs": per_run,
        "large_run": large,
        "large_recoveries": large_recoveries,
        "latency_runs": latencies,
        "timer_details": timers,
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kafka": kafka_version(),
        "broker": "external" if os.environ.get("LEADSCORE_KAFKA_BOOTSTRAP") else "embedded",
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_child:
        bootstrap, topic, expected = args.baseline_child
        print(json.dumps(consume_baseline(bootstrap, topic, int(expected))))
        return 0
    config = {
        "sizes": asdict(resolve_sizes(args)),
        "runs": args.runs,
        "partitions": args.partitions,
        "rates": args.rates,
        "profile": not args.no_profile,
    }
    if config["profile"] and pyspy.executable() is None:
        # Checked now, not when the first profile is due a dozen minutes in.
        print("py-spy is not installed: `.venv/bin/pip install py-spy`, or run with --no-profile")
        return 2
    measured: dict[str, Any] = {"config": config}
    if args.resume and PARTIAL.exists():
        measured = json.loads(PARTIAL.read_text())
        if measured.get("config") != config:
            print(f"{PARTIAL} holds results of other settings: run without --resume")
            return 2
    LOGS.mkdir(parents=True, exist_ok=True)
    for old in LOGS.glob("*.log"):
        old.unlink()
    RESULTS.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="leadscore-bench-") as work,
        broker_from_env() as bootstrap,
    ):
        bench = Bench(bootstrap, Path(work), args, measured)
        try:
            results = bench.run()
        finally:
            bench.cleanup()
    sessions = measured["sessions"]
    results = {
        "machine": machine(),
        "started": sessions[0]["started"],
        "minutes": round(
            (time.time() - bench.session_started) / 60
            + sum(session["minutes"] for session in sessions[:-1]),
            1,
        ),
        "sessions": sessions,
        "load_average_before": sessions[-1]["load_average_before"],
        "load_average_after": os.getloadavg(),
        "settings": {
            "runs": args.runs,
            "partitions": args.partitions,
            "rates": bench.rates,
            "worker": "python -m streams.worker --clock event --timer-interval 10 "
            "(other options at their defaults), binary-mode CloudEvents",
        },
        **results,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(render_markdown(results))
    print(args.output.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
