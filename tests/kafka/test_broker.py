"""The embedded broker: its configuration and cache logic, then the real JVM it runs."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import (
    NewTopic,
)  # where the type is declared (admin does not re-export it to mypy)

from streams.kafka import jvm
from streams.kafka.broker import (
    BOOTSTRAP_ENV,
    CACHE_ENV,
    HOST,
    POM,
    REPO_ROOT,
    BrokerError,
    EmbeddedBroker,
    SaslSslListener,
    broker_from_env,
    cache_root,
    fetch_kafka,
    free_ports,
    kafka_version,
    new_cluster_id,
    server_properties,
)

DEV_BROKER = """
import argparse, sys
from streams.kafka.broker import add_cli
parser = argparse.ArgumentParser()
add_cli(parser.add_subparsers(required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""
"""What `leadscore dev-broker` runs, without depending on the CLI module that wires it in."""

FIRST_LINE_TIMEOUT_S = 240.0
"""Long enough for a cold Maven fetch when this test is the first to need the jars."""


def parse_properties(text: str) -> dict[str, str]:
    lines = (line for line in text.splitlines() if line and not line.startswith("#"))
    return dict(line.split("=", 1) for line in lines)


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the process group (the JVM leads its own group)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid`, read from /proc (the JVM is dev-broker's only child)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


# --- unit tests: no broker ---------------------------------------------------------------------


def test_server_properties_describe_a_single_node_kraft_cluster(tmp_path: Path) -> None:
    props = parse_properties(
        server_properties(port=9092, controller_port=9093, log_dirs=tmp_path / "kraft")
    )

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in props  # --standalone refuses it
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
        "default.replication.factor",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.retention.ms"] == "-1"


def test_a_sasl_ssl_listener_is_added_beside_plaintext(tmp_path: Path) -> None:
    listener = SaslSslListener(tmp_path / "broker.pem", {"alice": "pw1", "bob": "pw2"})
    plain = parse_properties(server_properties(port=1, controller_port=2, log_dirs=tmp_path))
    props = parse_properties(
        server_properties(
            port=1, controller_port=2, log_dirs=tmp_path, sasl_ssl=listener, sasl_ssl_port=3
        )
    )

    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:1,SASL_SSL://127.0.0.1:3,CONTROLLER://127.0.0.1:2"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1,SASL_SSL://127.0.0.1:3"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.security.protocol.map"].split(",")[-1] == "SASL_SSL:SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["ssl.keystore.type"] == "PEM"
    assert props["ssl.keystore.location"] == str(tmp_path / "broker.pem")
    assert "ScramLoginModule" in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert {k: v for k, v in props.items() if k not in plain} == listener.properties()
    assert listener.scram_arguments() == [
        "--add-scram",
        "SCRAM-SHA-512=[name=alice,password=pw1]",
        "--add-scram",
        "SCRAM-SHA-512=[name=bob,password=pw2]",
    ]


def test_server_properties_escape_backslashes_in_paths() -> None:
    text = server_properties(port=1, controller_port=2, log_dirs=Path("/tmp/a\\b"))

    assert "log.dirs=/tmp/a\\\\b\n" in text


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)

    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, port))


def test_cluster_id_is_a_kafka_uuid_that_cannot_pass_for_an_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 of 0b111110... is '-'
    normal = uuid.UUID(bytes=bytes(range(16)))
    draws = iter([dash_first, normal])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))

    cluster_id = new_cluster_id()

    assert cluster_id == "AAECAwQFBgcICQoLDA0ODw"
    assert base64.urlsafe_b64decode(cluster_id + "==") == normal.bytes


def test_kafka_version_comes_from_the_pom() -> None:
    assert re.fullmatch(r"4\.\d+\.\d+", kafka_version())


def test_cache_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_root() == REPO_ROOT / ".cache"

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_root() == tmp_path


def fake_maven(calls: list[Path]) -> Callable[[Path, Path, str, str], None]:
    """A `run_maven` that records its calls and leaves an empty libs directory."""

    def run(pom: Path, libs: Path, jar_glob: str, what: str) -> None:
        calls.append(libs)
        libs.mkdir(parents=True)

    return run


def test_fetch_skips_maven_when_the_cache_is_complete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "kafka" / kafka_version()
    home.mkdir(parents=True)
    (home / "libs.complete").write_text(hashlib.sha256(POM.read_bytes()).hexdigest() + "\n")
    calls: list[Path] = []
    monkeypatch.setattr(jvm, "run_maven", fake_maven(calls))

    assert fetch_kafka(tmp_path) == home / "libs"
    assert calls == []


@pytest.mark.parametrize("marker", [None, "digest of an older pom\n"])
def test_fetch_runs_maven_when_the_cache_is_missing_or_stale(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, marker: str | None
) -> None:
    home = tmp_path / "kafka" / kafka_version()
    (home / "libs").mkdir(parents=True)
    (home / "libs" / "leftover.jar").write_text("")
    if marker is not None:
        (home / "libs.complete").write_text(marker)
    calls: list[Path] = []
    monkeypatch.setattr(jvm, "run_maven", fake_maven(calls))

    libs = fetch_kafka(tmp_path)

    assert calls == [home / "libs"]
    assert not (libs / "leftover.jar").exists()
    assert (home / "libs.complete").read_text().strip() == hashlib.sha256(
        POM.read_bytes()
    ).hexdigest()


def test_broker_from_env_uses_the_given_broker_and_starts_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: EmbeddedBroker) -> None:
        raise AssertionError("started a broker although one was given")

    monkeypatch.setenv(BOOTSTRAP_ENV, "kafka.example:9092")
    monkeypatch.setattr(EmbeddedBroker, "start", refuse)

    with broker_from_env() as bootstrap:
        assert bootstrap == "kafka.example:9092"


# --- integration tests: a real JVM -------------------------------------------------------------


@pytest.mark.integration
def test_round_trip_through_the_session_broker(kafka_bootstrap: str) -> None:
    topic = f"round-trip-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=3)]).values():
        future.result(timeout=30)
    sent = {f"contact-{i}": f"event-{i}".encode() for i in range(20)}
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    for key, value in sent.items():
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[str, bytes] = {}
    deadline = time.monotonic() + 60
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            got_key, got_value = message.key(), message.value()
            assert got_key is not None and got_value is not None
            received[got_key.decode()] = got_value
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    assert received == sent


@pytest.mark.integration
def test_stop_leaves_no_jvm_and_no_data_dir() -> None:
    embedded = EmbeddedBroker()
    embedded.start()
    pid, data_dir = embedded.pid, embedded.log_dir.parent
    assert pid is not None and group_alive(pid)

    embedded.stop()

    assert not group_alive(pid)
    assert not data_dir.exists()
    with pytest.raises(BrokerError):
        _ = embedded.bootstrap
    embedded.stop()  # a second stop is harmless


@pytest.mark.integration
def test_a_broker_that_cannot_start_says_why() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))  # bound, not listening: the JVM cannot bind, clients are refused
        port = int(taken.getsockname()[1])

        with pytest.raises(BrokerError, match="exited with code") as failure:
            EmbeddedBroker(port=port).start()

    assert "server.log" in str(failure.value)
    assert "Address already in use" in str(failure.value)


@pytest.fixture
def dev_broker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`dev-broker` as a child process; killed if a test leaves it running."""
    stderr = tmp_path / "dev-broker.stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", DEV_BROKER, "dev-broker"],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        yield process, stderr
    finally:
        if process.poll() is None:
            process.kill()  # the kernel then kills its JVM (PR_SET_PDEATHSIG)
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


def lists_broker(bootstrap: str) -> bool:
    """Whether the broker answers a metadata request (the client is gone before it stops)."""
    return 1 in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).brokers


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


@pytest.mark.integration
def test_dev_broker_prints_bootstrap_first_and_exits_cleanly_on_sigterm(
    dev_broker: tuple[subprocess.Popen[str], Path],
) -> None:
    process, stderr = dev_broker

    line = first_line(process, FIRST_LINE_TIMEOUT_S)

    match = re.fullmatch(r"bootstrap=(127\.0\.0\.1:\d+)\n", line)
    assert match, f"first line {line!r}; stderr:\n{stderr.read_text()}"
    assert lists_broker(match[1])
    (jvm,) = children(process.pid)
    assert group_alive(jvm)

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=60) == 0, stderr.read_text()
    assert not group_alive(jvm)
