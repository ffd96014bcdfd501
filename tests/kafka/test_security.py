"""Security settings: their checks and mappings, and real clients on a SASL_SSL listener.

The integration tests share one broker with a SASL_SSL listener (TLS with a CA made here,
SCRAM-SHA-512 users created when its storage is formatted), started once for this module.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types import TP

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.kafka.broker import EmbeddedBroker, SaslSslListener
from streams.kafka.client import EventPublisher, KeyedProducer
from streams.kafka.client_logs import LIBRDKAFKA, log_client_error
from streams.kafka.security import (
    PLAINTEXT,
    KafkaAccessError,
    KafkaConnection,
    KafkaSecurity,
    SecurityError,
    verify_access,
)
from streams.worker.state.store import ContactTable, contact_key, pack_record
from tests.kafka.certificates import Authority
from tests.support import event
from tests.worker.commands.test_demo import ALERT, DEMO
from tests.worker.harness import (
    REPO,
    TopicReader,
    WorkerProcess,
    free_port,
    new_prefix,
    wait_until,
)

USER, PASSWORD = "leadscore", "s3cret-pa55"


@dataclass(frozen=True)
class SecuredCluster:
    broker: EmbeddedBroker
    ca: Authority
    stranger: Authority
    """A CA that signed nothing the broker shows: trusting only it must fail."""

    def security(self, **changes: object) -> KafkaSecurity:
        good = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", USER, PASSWORD, self.ca.cafile)
        return replace(good, **changes)  # type: ignore[arg-type]

    def connection(self, **changes: object) -> KafkaConnection:
        return KafkaConnection(self.broker.sasl_ssl_bootstrap, self.security(**changes))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    """A broker with a SASL_SSL listener beside its PLAINTEXT one; started once per module."""
    directory = tmp_path_factory.mktemp("secured")
    ca = Authority.create(directory, "leadscore-test-ca")
    stranger = Authority.create(directory, "stranger-ca")
    listener = SaslSslListener(ca.keystore(directory / "broker.pem", "broker"), {USER: PASSWORD})
    with EmbeddedBroker(sasl_ssl=listener) as broker:
        yield SecuredCluster(broker, ca, stranger)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("ca"), "unit-ca")


# --- settings, without a broker ----------------------------------------------------------------


def test_plaintext_adds_nothing_and_gives_faust_no_credentials() -> None:
    assert PLAINTEXT.librdkafka_config() == {"security.protocol": "PLAINTEXT"}
    assert PLAINTEXT.faust_credentials() is None
    PLAINTEXT.check()


def test_sasl_ssl_maps_to_librdkafka_and_to_aiokafka_through_faust(
    certificates: Authority,
) -> None:
    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "u", "pw-9", certificates.cafile)
    security.check()
    assert security.librdkafka_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "u",
        "sasl.password": "pw-9",
        "ssl.ca.location": str(certificates.cafile),
    }
    auth = credentials_to_aiokafka_auth(security.faust_credentials())
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("u", "pw-9")
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert "pw-9" not in repr(security)


def test_sasl_plaintext_sends_no_tls_settings() -> None:
    security = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "p")
    assert "ssl.ca.location" not in security.librdkafka_config()
    credentials = security.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SASL_PLAINTEXT"


def test_ssl_with_a_client_certificate(certificates: Authority, tmp_path: Path) -> None:
    key, certificate = certificates.issue("client")
    keyfile, certfile = tmp_path / "client.key", tmp_path / "client.pem"
    keyfile.write_bytes(key)
    certfile.write_bytes(certificate)
    security = KafkaSecurity(
        "SSL", ssl_cafile=certificates.cafile, ssl_certfile=certfile, ssl_keyfile=keyfile
    )
    security.check()
    assert security.librdkafka_config() == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(certificates.cafile),
        "ssl.certificate.location": str(certfile),
        "ssl.key.location": str(keyfile),
    }
    credentials = security.faust_credentials()
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


@pytest.mark.parametrize(
    ("security", "message"),
    [
        (KafkaSecurity("SASL_SSL", sasl_password="p"), "sasl_username is required with"),
        (KafkaSecurity("SASL_PLAINTEXT", sasl_username="u"), "sasl_password is required with"),
        (KafkaSecurity(sasl_username="u"), "sasl_username is set, but security_protocol is"),
        (KafkaSecurity("SSL", sasl_password="p"), "use SASL_SSL"),
        (KafkaSecurity("SASL_SSL", "GSSAPI", "u", "p"), "sasl_mechanism: expected one of"),
        (KafkaSecurity("TLS"), "security_protocol: expected one of"),
        (KafkaSecurity("SSL", ssl_cafile=Path("/nonexistent/ca.pem")), "is not a file"),
        (KafkaSecurity(ssl_cafile=Path(__file__)), "which does not use TLS: use SSL"),
        (KafkaSecurity("SSL", ssl_certfile=Path(__file__)), "go together"),
        (KafkaSecurity("SSL", ssl_cafile=Path(__file__)), "not usable PEM files"),
    ],
)
def test_inconsistent_settings_fail_naming_the_setting(
    security: KafkaSecurity, message: str
) -> None:
    with pytest.raises(SecurityError, match=message):
        security.check()


def test_every_librdkafka_client_gets_bootstrap_security_and_log_hooks() -> None:
    security = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "p")
    config = KafkaConnection("k1:9092,k2:9092", security).librdkafka(
        {"client.id": "x", "bootstrap.servers": "elsewhere:1", "security.protocol": "PLAINTEXT"}
    )
    assert config["client.id"] == "x"
    assert config["bootstrap.servers"] == "k1:9092,k2:9092"
    assert config["security.protocol"] == "SASL_PLAINTEXT"  # a caller cannot weaken it
    assert (config["logger"], config["error_cb"]) == (LIBRDKAFKA, log_client_error)
    assert KafkaConnection("k1:9092,k2:9092").faust_brokers() == [
        "kafka://k1:9092",
        "kafka://k2:9092",
    ]


# --- real clients on the SASL_SSL listener -----------------------------------------------------


@pytest.mark.integration
def test_access_is_verified_and_refusals_name_the_setting(secured: SecuredCluster) -> None:
    verify_access(secured.connection(), timeout=30)
    with pytest.raises(KafkaAccessError, match=r"refused the SASL credentials[^\n]*\nCheck sasl_"):
        verify_access(secured.connection(sasl_password="wrong"), timeout=30)
    with pytest.raises(KafkaAccessError, match=r"failed the TLS handshake[^\n]*\nCheck ssl_cafile"):
        verify_access(secured.connection(ssl_cafile=secured.stranger.cafile), timeout=30)


@pytest.mark.integration
def test_the_worker_scores_over_sasl_ssl(secured: SecuredCluster, tmp_path: Path) -> None:
    connection = secured.connection()
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")  # as `echo ... > file` writes it
    worker = WorkerProcess(
        connection.bootstrap,
        new_prefix(),
        tmp_path / "data",
        tmp_path / "worker.log",
        extra_args=_security_flags(secured, "--sasl-password-file", str(password_file)),
    )
    try:
        worker.start()
        contact = f"secure-{uuid.uuid4().hex[:8]}"
        with EventPublisher(connection, worker.topics.events) as publisher:
            publisher.publish(event("email.replied", contact=contact))
            publisher.publish(event("page.visited", 60, {"url": "https://x/pricing"}, contact))
        wait_until(lambda: worker.score(contact) == 80, 60, "the contact scored 30 + 50")
        # The outputs went out through the worker's librdkafka producer over SASL_SSL too.
        updates = TopicReader(secured.broker.bootstrap, worker.topics.updates)
        wait_until(
            lambda: (
                [m["data"]["score"] for m in updates.values() if m["subject"] == contact]
                == [30, 80]
            ),
            30,
            "both score updates",
        )
    finally:
        worker.ensure_stopped()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("wrong", "message", "hint"),
    [
        ("password", "refused the SASL credentials", "--sasl-username (LEADSCORE_SASL_USERNAME)"),
        ("ca", "failed the TLS handshake", "--ssl-cafile (LEADSCORE_SSL_CAFILE)"),
    ],
)
def test_a_refused_login_stops_the_worker_at_start_naming_the_setting(
    secured: SecuredCluster, tmp_path: Path, wrong: str, message: str, hint: str
) -> None:
    env = {
        "LEADSCORE_SASL_PASSWORD": "wrong" if wrong == "password" else PASSWORD,
        "LEADSCORE_SSL_CAFILE": str((secured.stranger if wrong == "ca" else secured.ca).cafile),
    }
    worker = WorkerProcess(
        secured.broker.sasl_ssl_bootstrap,
        new_prefix(),
        tmp_path / "data",
        tmp_path / "worker.log",
        extra_args=_security_flags(secured, ca=False),
        env=env,
    )
    try:
        worker.start(wait_ready=False)
        assert worker.process is not None
        code = worker.process.wait(60)  # not the 30 s metadata timeout: the first refusal
    finally:
        worker.ensure_stopped()
    log = worker.log()
    assert code == 4, log
    assert message in log
    assert hint in log
    assert "Traceback" not in log


def _security_flags(secured: SecuredCluster, *more: str, ca: bool = True) -> list[str]:
    flags = ["--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512"]
    flags += ["--sasl-username", USER]
    if ca:
        flags += ["--ssl-cafile", str(secured.ca.cafile)]
    return [*flags, *more]


@pytest.mark.integration
def test_topics_are_created_over_sasl_ssl(secured: SecuredCluster) -> None:
    topic = f"secured-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(secured.connection(), [TopicSpec(topic, 2)]) == [topic]


@pytest.mark.integration
def test_the_demo_reaches_a_secured_broker_from_its_environment(secured: SecuredCluster) -> None:
    """`leadscore demo` with `LEADSCORE_KAFKA_BOOTSTRAP` and the security variables: its own
    publisher and alert reader, and the worker it starts, all log in over SASL_SSL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env |= {
        "LEADSCORE_KAFKA_BOOTSTRAP": secured.broker.sasl_ssl_bootstrap,
        "LEADSCORE_SECURITY_PROTOCOL": "SASL_SSL",
        "LEADSCORE_SASL_MECHANISM": "SCRAM-SHA-512",
        "LEADSCORE_SASL_USERNAME": USER,
        "LEADSCORE_SASL_PASSWORD": PASSWORD,
        "LEADSCORE_SSL_CAFILE": str(secured.ca.cafile),
    }
    command = [sys.executable, "-c", DEMO, "demo", "--contacts", "100", "--events", "3000"]
    command += ["--rate", "0", "--alerts", "1", "--web-port", str(free_port())]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    alerts = [line for line in done.stdout.splitlines() if not line.startswith("top 5 now")]
    assert ALERT.match(alerts[0]), done.stdout


@pytest.mark.integration
def test_no_answer_fails_at_the_timeout_naming_bootstrap_and_protocol() -> None:
    closed = KafkaConnection(f"127.0.0.1:{free_port()}")
    with pytest.raises(KafkaAccessError) as raised:
        verify_access(closed, timeout=1.0)
    message = str(raised.value)
    assert "answered within 1 s (PLAINTEXT): " in message
    assert "Connection refused" in message
    assert "Check bootstrap and security_protocol" in message


@pytest.mark.integration
def test_the_changelog_catch_up_reads_over_sasl_ssl(
    secured: SecuredCluster, tmp_path: Path
) -> None:
    """The catch-up reader connects as `app.kafka` says (build_worker sets the worker's)."""
    connection = secured.connection()
    topic = f"secured-{uuid.uuid4().hex[:8]}-changelog"
    ensure_topics(connection, [TopicSpec(topic, 1)])
    producer = KeyedProducer(connection)
    records = 1_000
    for number in range(records):
        producer.produce(topic, contact_key(f"c{number}"), pack_record(None, {0: 0}, b"s"), [], 0)
    producer.flush()
    app = faust.App("secured-catch-up", datadir=str(tmp_path))
    app.kafka = connection
    table = ContactTable(app, name="contacts", partitions=1, key_type=bytes, value_type=bytes)
    try:
        table.store.catch_up(topic, [0], lambda: False, time.monotonic() + 60)
        assert table.store.persisted_offset(TP(topic, 0)) == records - 1
    finally:
        table.store.close()
