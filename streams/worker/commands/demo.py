"""`leadscore demo`: the whole pipeline on one machine, with sales alerts printed as they arrive
and, every few seconds, the top 5 contacts of each plan now (from `GET /leads`).

A broker (the embedded one unless `LEADSCORE_KAFKA_BOOTSTRAP` is set, with the security
settings of `LEADSCORE_SECURITY_PROTOCOL` and the other `LEADSCORE_SASL_*`/`LEADSCORE_SSL_*`
variables, which the worker process inherits), a worker process on
fresh topics with the example plans, a thread feeding it the simulated population at a
steady rate, and this process reading `sales-alerts`. The worker runs with `--clock event`:
the simulated months pass in seconds, and inactivity rules fire as the stream's time passes
their deadlines, exactly as `leadscore backtest` would score the same events.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.backtest.simulate import generate
from streams.kafka.broker import BOOTSTRAP_ENV, broker_from_env
from streams.kafka.client import EventPublisher
from streams.kafka.security import PLAINTEXT, KafkaConnection
from streams.models.ledger import Ledger, format_cause, format_points
from streams.models.outputs import THRESHOLD_CROSSED
from streams.scoring import load_plans
from streams.worker.settings import (
    OPTIONS,
    SECURITY_OPTIONS,
    SettingsError,
    TopicNames,
    resolve_security,
)

EXAMPLE_PLANS = Path(__file__).resolve().parents[3] / "schemas" / "examples" / "plans.yaml"
READY_TIMEOUT = 120.0
TOP = 5
TOP_EVERY = 5.0
"""Seconds between two leaderboards."""
TOP_PREFIX = f"top {TOP} now"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run broker, worker and simulated contacts; print sales alerts as they arrive",
        description=__doc__,
    )
    demo.add_argument("--plans", type=Path, default=EXAMPLE_PLANS, help="scoring plans YAML")
    demo.add_argument("--contacts", type=int, default=1000, help="simulated contacts")
    demo.add_argument("--events", type=int, default=20000, help="simulated events")
    demo.add_argument("--rate", type=float, default=500.0, help="events/s sent (0: no limit)")
    demo.add_argument("--seed", type=int, default=7, help="simulation seed")
    demo.add_argument("--partitions", type=int, default=3, help="partitions of the demo topics")
    demo.add_argument("--web-port", type=int, default=6066, help="the worker's HTTP port")
    demo.add_argument(
        "--alerts", type=int, default=0, help="stop after this many alerts (0: run until Ctrl-C)"
    )
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        security = resolve_security() if os.environ.get(BOOTSTRAP_ENV) else PLAINTEXT
    except SettingsError as error:
        print(f"leadscore demo: {error}", file=sys.stderr)
        return 2
    try:
        with (
            broker_from_env() as bootstrap,
            tempfile.TemporaryDirectory(prefix="leadscore-") as tmp,
        ):
            return _run(args, KafkaConnection(bootstrap, security), Path(tmp))
    except KeyboardInterrupt:
        return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _worker_env(connection: KafkaConnection) -> dict[str, str]:
    """The worker inherits the security variables, except on the embedded (plain) broker."""
    if connection.security != PLAINTEXT:
        return dict(os.environ)
    names = {option.env_name for option in OPTIONS if option.name in SECURITY_OPTIONS}
    return {name: value for name, value in os.environ.items() if name not in names}


def _run(args: argparse.Namespace, connection: KafkaConnection, tmp: Path) -> int:
    bootstrap = connection.bootstrap
    prefix = f"demo-{uuid.uuid4().hex[:6]}."
    topics = TopicNames.with_prefix(prefix)
    log = tmp / "worker.log"
    command = [
        sys.executable, "-m", "streams.worker",
        "--plans", str(args.plans),
        "--bootstrap", bootstrap,
        "--partitions", str(args.partitions),
        "--data-dir", str(tmp / "data"),
        "--web-port", str(args.web_port),
        "--topic-prefix", prefix,
        "--clock", "event",
        "--timer-interval", "2",
    ]  # fmt: skip
    with log.open("wb") as output:
        worker = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=_worker_env(connection)
        )
    print(f"broker {bootstrap}; worker pid {worker.pid}, log {log}", file=sys.stderr)
    feeder: threading.Thread | None = None
    stop = threading.Event()
    try:
        _wait_ready(worker, f"http://127.0.0.1:{args.web_port}/readyz", log)
        print(
            f"worker ready: http://127.0.0.1:{args.web_port}/contacts/<id>, /metrics; "
            "Ctrl-C stops everything",
            file=sys.stderr,
        )
        feeder = threading.Thread(
            target=_feed, args=(args, connection, topics.events, stop), daemon=True
        )
        feeder.start()
        shown = 0
        why = AlertPoints()
        board = Leaderboard(
            f"http://127.0.0.1:{args.web_port}", [plan.name for plan in load_plans(args.plans)]
        )
        for arrived in _outputs(connection, [topics.updates, topics.alerts]):
            for line in board.due(time.monotonic()):
                print(line, flush=True)
            if arrived is None:
                continue
            topic, sent = arrived
            ready = why.update(sent) if topic == topics.updates else why.alert(sent)
            for alert, points in ready:
                print(describe(alert, points), flush=True)
                shown += 1
                if shown == args.alerts:
                    return 0
        return 0
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(10)
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _wait_ready(worker: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the worker was not ready within {READY_TIMEOUT}s; see {log}")


def _feed(
    args: argparse.Namespace, connection: KafkaConnection, topic: str, stop: threading.Event
) -> None:
    """Send the simulated population at `args.rate` events/s until done or stopped."""
    started = time.monotonic()
    sent = 0
    with EventPublisher(connection, topic) as publisher:
        for event in generate(args.contacts, args.events, seed=args.seed):
            if stop.is_set():
                return
            publisher.publish(event)
            sent += 1
            if args.rate > 0:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    stop.wait(ahead)
    print(f"all {sent} simulated events sent; alerts from timers may follow", file=sys.stderr)


def _outputs(
    connection: KafkaConnection, topics: list[str]
) -> Iterator[tuple[str, dict[str, Any]] | None]:
    """(topic, output) of every output on the topics, from the beginning, as they arrive;
    None when half a second passes without one (the leaderboard's turn)."""
    consumer = Consumer(
        connection.librdkafka({"group.id": f"{topics[0]}-demo", "enable.auto.commit": False})
    )
    try:
        assignment = []
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(assignment)
        while True:
            message = consumer.poll(0.5)
            if message is None or message.error():
                yield None
                continue
            value, source = message.value(), message.topic()
            if value and source is not None:
                yield source, json.loads(value)
    finally:
        consumer.close()


Explained = tuple[dict[str, Any], dict[str, int]]
"""An alert and the points each rule gained or lost in the change that sent it."""


class AlertPoints:
    """Each alert with the points its change moved, from the score updates.

    An alert carries the breakdown after its change, not the change itself; that is the
    difference from the contact's score update before it in the plan (`Ledger`), so the demo
    reads `score-updates` too. The two topics are read together, with no order between them:
    an alert that comes before its own update (same plan, cause and scores) waits for it. The
    points of every update are kept, so an alert later than its update still finds them: the
    demo's population, and so its number of updates, is fixed by `--events`.
    """

    def __init__(self) -> None:
        self._ledger = Ledger()
        self._points: dict[str, dict[str, int]] = {}
        self._waiting: dict[str, list[dict[str, Any]]] = {}

    def update(self, update: dict[str, Any]) -> list[Explained]:
        """A score update read: the alerts that were waiting for it."""
        points = self._ledger.record(update["type"], update["data"])
        if points is None:
            return []
        key = _change(update)
        self._points[key] = points
        return [(alert, points) for alert in self._waiting.pop(key, [])]

    def alert(self, alert: dict[str, Any]) -> list[Explained]:
        """An alert read: itself if its update came first, else nothing yet."""
        key = _change(alert)
        if key in self._points:
            return [(alert, self._points[key])]
        self._waiting.setdefault(key, []).append(alert)
        return []


def _change(output: dict[str, Any]) -> str:
    """What an alert has in common with its score update."""
    data = output["data"]
    fields = ("contact_id", "plan", "score", "previous_score", "cause")
    return json.dumps([output["time"], *(data[name] for name in fields)], sort_keys=True)


def describe(alert: dict[str, Any], points: dict[str, int]) -> str:
    """One line: when, who, which plan and threshold, the score, and why: the cause, and the
    points each rule gained or lost in this change (not the rules' totals)."""
    data = alert["data"]
    arrow = "crossed" if alert["type"] == THRESHOLD_CROSSED else "dropped"
    return (
        f"{alert['time'][:16].replace('T', ' ')}  {data['contact_id']:<10} {data['plan']:<11} "
        f"{arrow} {data['threshold']} ({data['threshold_score']})  "
        f"score {data['score']} (was {data['previous_score']})  "
        f"why: {format_cause(data['cause'])}: {format_points(points)}"
    )


class Leaderboard:
    """The top contacts of each plan, from the worker's `GET /leads`, every `TOP_EVERY` s."""

    def __init__(self, url: str, plans: list[str]) -> None:
        self._url = url
        self._plans = plans
        self._next = 0.0

    def due(self, now: float) -> list[str]:
        """One line per plan when a leaderboard is due, else none."""
        if now < self._next:
            return []
        self._next = now + TOP_EVERY
        return [self._line(plan) for plan in self._plans]

    def _line(self, plan: str) -> str:
        query = urllib.parse.urlencode({"plan": plan, "limit": TOP})
        try:
            with urllib.request.urlopen(f"{self._url}/leads?{query}", timeout=2) as response:
                return top_line(plan, json.loads(response.read()))
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as error:
            return f"{TOP_PREFIX}  {plan}: not available ({error})"


def top_line(plan: str, answer: dict[str, Any]) -> str:
    """`top 5 now  <plan>: <contact> <score>, ...`, saying so when partitions are missing."""
    leads = ", ".join(f"{lead['contact_id']} {lead['score']}" for lead in answer["leads"])
    missing = answer["missing_partitions"]
    partial = f" (partitions {', '.join(map(str, missing))} missing)" if missing else ""
    return f"{TOP_PREFIX}  {plan}: {leads or 'none yet'}{partial}"
