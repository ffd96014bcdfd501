"""A standalone Kafka Connect worker beside the embedded broker, running one sink connector.

Why: `lead-scores` is made to be copied into a CRM's database by a sink connector, and whether
a real connector reads it (upserts, deletes on tombstones, new plan columns) can only be seen
by running one. Maven fetches Kafka's `connect-runtime` (`deploy/connect/pom.xml`, the broker's
Kafka version) and the connector with its driver as a plugin of its own
(`deploy/connect/debezium-jdbc/pom.xml`) into the jar cache; this module writes the shipped
configuration (`deploy/connect/*.properties`) with local overrides, starts the JVM, waits until
the connector and its task run, and stops it by its process group (`streams/kafka/jvm.py`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.kafka.broker import HOST, LOG4J2_CONFIG, REPO_ROOT, cache_root, free_ports
from streams.kafka.broker import kafka_version as broker_kafka_version
from streams.kafka.jvm import (
    JvmError,
    OwnedJvm,
    catch_stop_signals,
    fetch_jars,
    java,
    launch,
    stop_group,
    tail_file,
)

DEPLOY = REPO_ROOT / "deploy" / "connect"
POM = DEPLOY / "pom.xml"
PLUGIN_POM = DEPLOY / "debezium-jdbc" / "pom.xml"
WORKER_CONFIG = DEPLOY / "connect-standalone.properties"
SINK_CONFIG = DEPLOY / "lead-scores-postgres.properties"

JVM_OPTIONS = (
    # Two cores and several JVMs: a sink of a few records needs little.
    "-Xms64m",
    "-Xmx256m",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
_POLL_S = 0.2


class ConnectError(JvmError):
    """The Connect worker or its connector could not be fetched or started; the message says why."""


def fetch_connect(cache_dir: Path | None = None) -> tuple[Path, Path]:
    """(the worker's classpath directory, its `plugin.path`), fetched by Maven when incomplete.

    The plugin directory sits alone under its own `plugin.path` so that the worker loads it
    with a classloader of its own, as an operator's installation would.
    """
    home = (cache_dir or cache_root()) / "connect" / broker_kafka_version()
    libs = fetch_jars(POM, home / "runtime", "connect-runtime-*.jar", "Kafka Connect")
    plugin = fetch_jars(
        PLUGIN_POM,
        home / "plugins" / "debezium-connector-jdbc",
        "debezium-connector-jdbc-*.jar",
        "the Debezium JDBC sink connector",
    )
    return libs, plugin.parent.parent


def read_properties(path: Path) -> dict[str, str]:
    """A `.properties` file's settings (the simple subset the shipped files use: `key=value`
    lines, `#` comments), so tests start Connect from the files an operator deploys."""
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if text and not text.startswith(("#", "!")):
            key, _, value = text.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def write_properties(path: Path, settings: Mapping[str, str]) -> None:
    lines = ["# Written by streams/kafka/connect.py; edits are lost."]
    lines += [key + "=" + value.replace("\\", "\\\\") for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True, slots=True)
class ConnectorState:
    """What the REST API says of the connector: its state and its tasks' states and traces."""

    state: str
    tasks: tuple[tuple[str, str], ...]
    """(state, trace) per task."""

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> ConnectorState:
        tasks = tuple((t["state"], t.get("trace", "")) for t in status.get("tasks", ()))
        return cls(status["connector"]["state"], tasks)

    @property
    def running(self) -> bool:
        return (
            self.state == "RUNNING"
            and bool(self.tasks)
            and {s for s, _ in self.tasks} == {"RUNNING"}
        )

    @property
    def failure(self) -> str | None:
        """The first failed task's trace (or the connector's failure); None when none failed."""
        for state, trace in self.tasks:
            if state == "FAILED":
                return trace or "a task failed"
        return "the connector failed" if self.state == "FAILED" else None


class EmbeddedConnect(OwnedJvm):
    """One standalone Connect worker JVM on 127.0.0.1 running one connector, owned by this process.

    `connector` is the connector's configuration (e.g. `read_properties(SINK_CONFIG)` with the
    database's address); the worker's comes from `deploy/connect/connect-standalone.properties`
    with the broker, a free REST port, a temporary offsets file and the fetched plugins.
    """

    def __init__(
        self,
        bootstrap: str,
        connector: Mapping[str, str],
        *,
        start_timeout: float = START_TIMEOUT_S,
        cache_dir: Path | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._connector = dict(connector)
        self._start_timeout = start_timeout
        self._cache_dir = cache_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._rest: str | None = None

    @property
    def name(self) -> str:
        return self._connector["name"]

    @property
    def pid(self) -> int | None:
        """The JVM's pid, which is also its process group id; None when not running."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Fetch the jars if needed, start the JVM, wait until the connector's tasks run."""
        if self._process is not None:
            raise ConnectError("the Connect worker is already running")
        catch_stop_signals()
        libs, plugin_path = fetch_connect(self._cache_dir)
        self._owned()
        try:
            self._dir = Path(tempfile.mkdtemp(prefix="leadscore-connect-"))
            self._process = self._launch(libs, plugin_path, self._dir)
            self._await_running(self._process, time.monotonic() + self._start_timeout)
        except BaseException:
            self.stop()
            raise

    def _launch(self, libs: Path, plugin_path: Path, home: Path) -> subprocess.Popen[bytes]:
        (port,) = free_ports(1)
        self._rest = f"http://{HOST}:{port}"
        worker = read_properties(WORKER_CONFIG) | {
            "bootstrap.servers": self._bootstrap,
            "listeners": self._rest,
            "offset.storage.file.filename": str(home / "connect.offsets"),
            "plugin.path": str(plugin_path),
        }
        write_properties(home / "worker.properties", worker)
        write_properties(home / "connector.properties", self._connector)
        command = [
            java(),
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={home}",
            "-cp",
            str(libs / "*"),
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(home / "worker.properties"),
            str(home / "connector.properties"),
        ]
        return launch(command, home / "stderr.log", home)

    def status(self) -> ConnectorState | None:
        """The connector's state from the REST API; None while it does not answer yet."""
        if self._rest is None:
            raise ConnectError("the Connect worker is not running")
        url = f"{self._rest}/connectors/{self.name}/status"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return ConnectorState.from_status(json.load(response))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def _await_running(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        """Return once the connector and all its tasks run; a failed task, a JVM that exits
        and a deadline are errors that carry the cause."""
        while True:
            if process.poll() is not None:
                raise ConnectError(
                    f"Kafka Connect exited with code {process.returncode} while starting\n"
                    + self.log_tail()
                )
            state = self.status()
            if state is not None and state.running:
                return
            if state is not None and state.failure is not None:
                raise ConnectError(f"connector {self.name} failed:\n{trace_causes(state.failure)}")
            if time.monotonic() > deadline:
                raise ConnectError(
                    f"connector {self.name} was not running within {self._start_timeout:.0f} s"
                    f" (last state: {state})\n" + self.log_tail()
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_POLL_S)

    def log_tail(self) -> str:
        if self._dir is None:
            return ""
        return (
            f"--- {self._dir / 'stderr.log'} ---\n{tail_file(self._dir / 'stderr.log')}\n"
            f"--- {self._dir / 'server.log'} ---\n{tail_file(self._dir / 'server.log')}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the JVM (SIGTERM, SIGKILL after `timeout`) and delete its directory; safe to
        call more than once."""
        if self._process is not None:
            stop_group(self._process, timeout)
        self._process = None
        self._rest = None
        self._released()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def trace_causes(trace: str) -> str:
    """A Java trace without its frames: the exception and each `Caused by:`, where the reason
    is (a converter's complaint sits under Connect's "Tolerance exceeded in error handler")."""
    return "\n".join(
        line for line in trace.splitlines() if not line.startswith(("\tat ", "\t... "))
    )
