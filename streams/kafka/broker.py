"""A real single-node Kafka broker (KRaft, broker and controller in one JVM) run by Python.

Why: what matters in the stream worker (offset commits, changelog recovery, rebalances,
co-partitioning) can only be checked against a real broker, and neither this machine nor CI
has Docker; they reach only package registries. So Maven fetches the broker's jars from Maven
Central (`deploy/kafka/pom.xml`) into a git-ignored cache, and this module formats, starts,
probes and stops the JVM.

No JVM may outlive its owner (`streams/kafka/jvm.py`): `stop()` runs on leaving a `with`
block, at interpreter exit (`atexit`), on Ctrl-C and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.kafka.jvm import (
    JvmError,
    OwnedJvm,
    catch_stop_signals,
    fetch_jars,
    java,
    launch,
    run_tool,
    stop_group,
    tail_file,
    tail_text,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J2_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"

BOOTSTRAP_ENV = "LEADSCORE_KAFKA_BOOTSTRAP"
"""When set, tests and tools use this broker and start none of their own."""
CACHE_ENV = "LEADSCORE_CACHE_DIR"
"""Overrides `<repo>/.cache` as the root of the jar cache (e.g. a directory CI keeps)."""

HOST = "127.0.0.1"
NODE_ID = 1
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    # A broker stuck in OutOfMemoryError would hang the tests instead of failing them.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
FORMAT_TIMEOUT_S = 120.0
_MIB = 1024 * 1024
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


class BrokerError(JvmError):
    """The broker could not be fetched, started or reached; the message says why."""


# --- fetching the jars -------------------------------------------------------------------------


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version pinned in the pom: the pom is the one place a version bump happens."""
    node = ElementTree.parse(pom).getroot().find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def cache_root() -> Path:
    """Where fetched jars live: `$LEADSCORE_CACHE_DIR`, else the repository's `.cache`."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else REPO_ROOT / ".cache"


def fetch_kafka(cache_dir: Path | None = None) -> Path:
    """Return the directory holding the broker's jars, running Maven only when it is incomplete."""
    home = (cache_dir or cache_root()) / "kafka" / kafka_version()
    return fetch_jars(POM, home, "kafka_2.13-*.jar", "the Kafka jars")


# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaslSslListener:
    """An extra listener that wants TLS and a SCRAM login, as managed clusters do.

    `keystore` is one PEM file with the broker's private key (PKCS#8, unencrypted) and its
    certificate chain; the certificate must name 127.0.0.1. `users` (name -> password) get
    SCRAM credentials when the storage is formatted, so they exist before the first client
    connects; a persisted data dir keeps those of its first start.
    """

    keystore: Path
    users: Mapping[str, str]
    mechanism: str = "SCRAM-SHA-512"

    def properties(self) -> dict[str, str]:
        """What `server_properties` adds for this listener (besides the listener lists)."""
        return {
            "sasl.enabled.mechanisms": self.mechanism,
            f"listener.name.sasl_ssl.{self.mechanism.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
        }

    def scram_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that create the users' credentials."""
        arguments: list[str] = []
        for name, password in self.users.items():
            arguments += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return arguments


def server_properties(
    *,
    port: int,
    controller_port: int,
    log_dirs: Path,
    sasl_ssl: SaslSslListener | None = None,
    sasl_ssl_port: int = 0,
) -> str:
    """The `server.properties` of a one-node KRaft cluster listening on 127.0.0.1 only."""
    listeners = f"PLAINTEXT://{HOST}:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if sasl_ssl is not None:
        listeners += f",SASL_SSL://{HOST}:{sasl_ssl_port}"
        protocols += ",SASL_SSL:SASL_SSL"
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"{listeners},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": listeners,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        "log.dirs": str(log_dirs),
        # One node: every internal topic must accept a single replica.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions: the first consumer group and transaction start sooner.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "8",
        "num.partitions": "1",
        # A lone consumer joins at once instead of after the default 3 s.
        "group.initial.rebalance.delay.ms": "0",
        # Topics are part of the app's contract: a typo must fail, not create a topic.
        "auto.create.topics.enable": "false",
        # Size-based retention only: tests replay events with old timestamps, and time-based
        # retention would delete them within minutes.
        "log.retention.ms": "-1",
        "log.retention.bytes": str(256 * _MIB),
        "log.segment.bytes": str(16 * _MIB),
        # The compaction dedupe buffer comes out of the 512 MiB heap (default 128 MiB).
        "log.cleaner.dedupe.buffer.size": str(16 * _MIB),
        # The cleaner looks for work every 0.5 s, not 15: erasure tests wait for compaction.
        "log.cleaner.backoff.ms": "500",
    }
    if sasl_ssl is not None:
        settings |= sasl_ssl.properties()
    lines = ["# Written by streams/kafka/broker.py for one embedded broker; edits are lost."]
    # Backslash is the properties format's escape character.
    lines += [key + "=" + value.replace("\\", "\\\\") for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that nothing listens on right now.

    Every socket stays bound until all are chosen, so the kernel cannot hand out one port
    twice. Someone else may still take a port before the JVM binds it; the broker then fails
    to start with a bind error in the log tail.
    """
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def new_cluster_id() -> str:
    """A random Kafka `Uuid` (URL-safe base64 of 16 bytes, no padding).

    Like Kafka's own generator it never starts with '-', which the StorageTool would read as
    an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


# --- the broker --------------------------------------------------------------------------------


class EmbeddedBroker(OwnedJvm):
    """One KRaft broker+controller JVM on 127.0.0.1, owned and stopped by this process.

    Without `data_dir` it lives in a temporary directory deleted by `stop()`; with one, its
    topics survive restarts (the directory is formatted only once). With `sasl_ssl` it also
    listens for TLS + SCRAM clients on `sasl_ssl_bootstrap`.
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        port: int = 0,
        start_timeout: float = START_TIMEOUT_S,
        cache_dir: Path | None = None,
        sasl_ssl: SaslSslListener | None = None,
    ) -> None:
        self._sasl_ssl = sasl_ssl
        self._sasl_ssl_bootstrap: str | None = None
        self._requested_data_dir = data_dir
        self._requested_port = port
        self._start_timeout = start_timeout
        self._cache_dir = cache_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._bootstrap: str | None = None
        self._data_dir: Path | None = None
        self._temporary = False

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT` of the PLAINTEXT listener."""
        if self._bootstrap is None:
            raise BrokerError("the broker is not running")
        return self._bootstrap

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """`127.0.0.1:PORT` of the SASL_SSL listener (only with `sasl_ssl`)."""
        if self._sasl_ssl_bootstrap is None:
            raise BrokerError("the broker is not running with a SASL_SSL listener")
        return self._sasl_ssl_bootstrap

    @property
    def pid(self) -> int | None:
        """The JVM's pid, which is also its process group id; None when not running."""
        return None if self._process is None else self._process.pid

    @property
    def log_dir(self) -> Path:
        """Where `server.log` (INFO) and `stderr.log` (WARN and JVM errors) are written."""
        if self._data_dir is None:
            raise BrokerError("the broker is not running")
        return self._data_dir / "logs"

    def start(self) -> None:
        """Fetch the jars if needed, format the storage once, start the JVM, wait until ready."""
        if self._process is not None:
            raise BrokerError("the broker is already running")
        catch_stop_signals()
        libs = fetch_kafka(self._cache_dir)
        self._owned()
        try:
            if self._requested_data_dir is None:
                self._data_dir = Path(tempfile.mkdtemp(prefix="leadscore-kafka-"))
                self._temporary = True
            else:
                self._data_dir = self._requested_data_dir.resolve()
                self._data_dir.mkdir(parents=True, exist_ok=True)
            self._process = self._launch(libs, self._data_dir)
            self._await_ready(self._process, time.monotonic() + self._start_timeout)
        except BaseException:
            self.stop()
            raise

    def _launch(self, libs: Path, data_dir: Path) -> subprocess.Popen[bytes]:
        """Write the config, format a new data dir, start the JVM and note its address."""
        log_dir = data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        storage = data_dir / "kraft"
        if self._requested_port:
            port = self._requested_port
            controller_port, sasl_ssl_port = [p for p in free_ports(3) if p != port][:2]
        else:
            port, controller_port, sasl_ssl_port = free_ports(3)
        config = data_dir / "server.properties"
        config.write_text(
            server_properties(
                port=port,
                controller_port=controller_port,
                log_dirs=storage,
                sasl_ssl=self._sasl_ssl,
                sasl_ssl_port=sasl_ssl_port,
            )
        )
        command = [
            java(),
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={log_dir}",
            "-cp",
            str(libs / "*"),
        ]
        if not (storage / "meta.properties").is_file():
            scram = self._sasl_ssl.scram_arguments() if self._sasl_ssl else []
            _format_storage(command, config, scram)
        self._bootstrap = f"{HOST}:{port}"
        if self._sasl_ssl is not None:
            self._sasl_ssl_bootstrap = f"{HOST}:{sasl_ssl_port}"
        return launch([*command, "kafka.Kafka", str(config)], log_dir / "stderr.log", data_dir)

    def _await_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        """Return once the broker lists itself in a metadata response.

        The port accepts connections before the broker serves requests (it first waits for the
        controller to unfence it); a broker that lists itself is unfenced, so topics can be
        created at once. The AdminClient is made only once the port accepts, so librdkafka
        logs no refused connections.
        """
        bootstrap = self.bootstrap
        admin: AdminClient | None = None
        while True:
            if process.poll() is not None:
                raise BrokerError(
                    f"Kafka exited with code {process.returncode} while starting\n"
                    + self.log_tail()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"Kafka did not answer on {bootstrap} within {self._start_timeout:.0f} s\n"
                    + self.log_tail()
                )
            if admin is None and _accepts(bootstrap):
                admin = AdminClient({"bootstrap.servers": bootstrap})
            if admin is not None and _lists_broker(admin, min(remaining, 1.0)):
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.1)

    def log_tail(self) -> str:
        """The last lines of both broker logs: what an error message about the broker needs."""
        if self._data_dir is None:
            return ""
        log_dir = self._data_dir / "logs"
        return (
            f"--- {log_dir / 'stderr.log'} ---\n{tail_file(log_dir / 'stderr.log')}\n"
            f"--- {log_dir / 'server.log'} ---\n{tail_file(log_dir / 'server.log')}"
        )

    def wait(self) -> int:
        """Block until the JVM exits on its own; return its exit code."""
        if self._process is None:
            raise BrokerError("the broker is not running")
        return self._process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the JVM and delete a temporary data directory; safe to call more than once.

        SIGTERM lets Kafka shut down cleanly; SIGKILL follows after `timeout` seconds. Both go
        to the process group, so nothing the JVM started survives it.
        """
        if self._process is not None:
            stop_group(self._process, timeout)
        self._process = None
        self._bootstrap = None
        self._sasl_ssl_bootstrap = None
        self._released()
        if self._temporary and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
            self._temporary = False


def _format_storage(jvm: list[str], config: Path, scram: list[str]) -> None:
    """Write meta.properties and the single-voter quorum (`--standalone`) into the log dirs,
    with the SCRAM credentials `scram` (`--add-scram ...` arguments) in the metadata."""
    command = [
        *jvm,
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        new_cluster_id(),
        "-c",
        str(config),
        *scram,
    ]
    done = run_tool(command, FORMAT_TIMEOUT_S, "Kafka's StorageTool")
    if done.returncode != 0:
        output = tail_text(done.stdout + done.stderr)
        raise BrokerError(
            f"formatting the Kafka storage failed (exit {done.returncode}):\n{output}"
        )


def _accepts(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _lists_broker(admin: AdminClient, timeout: float) -> bool:
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return NODE_ID in metadata.brokers


@contextlib.contextmanager
def broker_from_env() -> Iterator[str]:
    """Yield a bootstrap address: `$LEADSCORE_KAFKA_BOOTSTRAP` if set, else an embedded broker's.

    A set variable means someone else runs the broker (a CI service, a `dev-broker` in another
    terminal), so nothing is started or stopped here.
    """
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


# --- command line ------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dev-broker` to the `leadscore` command."""
    parser = subparsers.add_parser(
        "dev-broker",
        help="run a local single-node Kafka broker in the foreground",
        description=(
            "Run a real single-node Kafka broker (KRaft) on 127.0.0.1 until Ctrl-C or SIGTERM. "
            "The first line of stdout is 'bootstrap=127.0.0.1:PORT'. The jars are fetched "
            "from Maven Central on first use."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep topics and logs here across runs (default: a temporary directory, deleted "
        "on exit)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="PLAINTEXT port on 127.0.0.1 (default 0: any free)"
    )
    parser.set_defaults(handler=run_dev_broker)


def run_dev_broker(args: argparse.Namespace) -> int:
    """Run the broker until Ctrl-C/SIGTERM (exit 0) or until it dies on its own (exit 1)."""
    catch_stop_signals(always=True)
    broker = EmbeddedBroker(data_dir=args.data_dir, port=args.port)
    try:
        with broker:
            print(f"bootstrap={broker.bootstrap}", flush=True)
            print(f"Kafka {kafka_version()} logs in {broker.log_dir}", file=sys.stderr, flush=True)
            code = broker.wait()
            report = broker.log_tail()
    except KeyboardInterrupt:
        return 0
    except JvmError as exc:
        print(f"dev-broker: {exc}", file=sys.stderr)
        return 1
    print(f"dev-broker: Kafka exited with code {code}\n{report}", file=sys.stderr)
    return 1
