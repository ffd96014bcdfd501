"""How leadscore's Kafka clients reach a secured cluster: TLS and SASL, from one object.

The worker runs two client libraries (aiokafka under Faust, librdkafka for outputs, the
changelog catch-up, the admin client), each with its own spelling of the same settings.
`KafkaSecurity` holds them once, under the names operators know from librdkafka and Faust,
checks that they make sense together, and turns them into a librdkafka config
(`librdkafka_config`) and Faust's `broker_credentials` (`faust_credentials`).
`KafkaConnection` adds the bootstrap servers and the log hooks, so that every client the
project builds (`KafkaConnection.librdkafka`) connects the same way.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from faust.types.auth import CredentialsT

from streams.kafka.client_logs import LIBRDKAFKA, log_client_error

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})

Config = dict[str, Any]


class SecurityError(ValueError):
    """Security settings that cannot work together; the message names the setting."""


class KafkaAccessError(RuntimeError):
    """The cluster refused the credentials or the TLS handshake; the message says which
    setting to look at."""


def _field_name(name: str) -> str:
    return name


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """TLS and SASL settings, named after their librdkafka/Faust counterparts."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: Path | None = None
    """CA bundle (PEM) that signed the brokers' certificates; none: the system's."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for clusters that authenticate clients by TLS."""
    ssl_keyfile: Path | None = None

    @property
    def sasl(self) -> bool:
        return self.security_protocol in SASL_PROTOCOLS

    @property
    def tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    def check(self, name: Callable[[str], str] = _field_name) -> None:
        """Raise `SecurityError` for settings that cannot work; `name` turns a field name
        into what the operator sets (a flag and its variable)."""
        protocol = name("security_protocol")
        if self.security_protocol not in PROTOCOLS:
            raise SecurityError(f"{protocol}: expected one of {', '.join(PROTOCOLS)}")
        if self.sasl_mechanism not in MECHANISMS:
            raise SecurityError(
                f"{name('sasl_mechanism')}: expected one of {', '.join(MECHANISMS)}"
            )
        if self.sasl:
            for setting in ("sasl_username", "sasl_password"):
                if not getattr(self, setting):
                    raise SecurityError(
                        f"{name(setting)} is required with {protocol} {self.security_protocol}"
                    )
        else:
            for setting in ("sasl_username", "sasl_password"):
                if getattr(self, setting):
                    raise SecurityError(
                        f"{name(setting)} is set, but {protocol} is {self.security_protocol}, "
                        "which sends no credentials: use SASL_SSL (or SASL_PLAINTEXT)"
                    )
        files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        for setting in files:
            path: Path | None = getattr(self, setting)
            if path is None:
                continue
            if not self.tls:
                raise SecurityError(
                    f"{name(setting)} is set, but {protocol} is {self.security_protocol}, "
                    "which does not use TLS: use SSL or SASL_SSL"
                )
            if not path.is_file():
                raise SecurityError(f"{name(setting)}: {path} is not a file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise SecurityError(
                f"{name('ssl_certfile')} and {name('ssl_keyfile')} go together: "
                "set both (client certificate and its private key) or neither"
            )
        if self.tls:
            try:
                self.ssl_context()
            except (ssl.SSLError, ValueError) as error:
                given = [name(s) for s in files if getattr(self, s) is not None]
                raise SecurityError(f"{', '.join(given)}: not usable PEM files ({error})") from None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context aiokafka uses: verifies the broker's certificate and host name."""
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile is not None:
            context.load_cert_chain(
                str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
            )
        return context

    def librdkafka_config(self) -> Config:
        """The same settings in librdkafka's names (only those the protocol uses)."""
        config: Config = {"security.protocol": self.security_protocol}
        if self.sasl:
            config |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password,
            }
        if self.tls:
            files = {
                "ssl.ca.location": self.ssl_cafile,
                "ssl.certificate.location": self.ssl_certfile,
                "ssl.key.location": self.ssl_keyfile,
            }
            config |= {key: str(path) for key, path in files.items() if path is not None}
        return config

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's `broker_credentials`, handed to its aiokafka consumer and producer."""
        if self.sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context() if self.tls else None,
            )
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def describe(self) -> str:
        """For error messages: what was tried, without the password."""
        if self.sasl:
            return f"{self.security_protocol}, {self.sasl_mechanism} user {self.sasl_username!r}"
        return self.security_protocol


PLAINTEXT = KafkaSecurity()


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where the cluster is and how to get in: what every client is built from."""

    bootstrap: str
    security: KafkaSecurity = PLAINTEXT

    def librdkafka(self, config: Mapping[str, Any] | None = None) -> Config:
        """A librdkafka client config: the log hooks, `config`, then bootstrap and security,
        which `config` cannot override (a client cannot end up less secured than the rest).

        The hooks route librdkafka's log lines and errors through Python logging and its
        repeat filter (`streams.kafka.client_logs`) instead of raw stderr; `config` may
        replace them (`verify_access` does)."""
        return {
            "logger": LIBRDKAFKA,
            "error_cb": log_client_error,
            **(config or {}),
            "bootstrap.servers": self.bootstrap,
            **self.security.librdkafka_config(),
        }

    def faust_brokers(self) -> list[str]:
        return [f"kafka://{host}" for host in self.bootstrap.split(",")]


def as_connection(kafka: str | KafkaConnection) -> KafkaConnection:
    """A bare bootstrap string means an unsecured cluster (tests, the embedded broker)."""
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection(kafka)


def _access_hints(name: Callable[[str], str]) -> dict[int, tuple[str, str]]:
    """What each refusal means and which settings to fix."""
    return {
        KafkaError._AUTHENTICATION: (
            "refused the SASL credentials",
            f"Check {name('sasl_username')}, {name('sasl_password')} and {name('sasl_mechanism')}.",
        ),
        KafkaError._SSL: (
            "failed the TLS handshake",
            f"Check {name('ssl_cafile')}: it must hold the CA that signed the brokers' "
            f"certificates (and {name('ssl_certfile')} / {name('ssl_keyfile')}, if the "
            "cluster checks client certificates).",
        ),
    }


def verify_access(
    connection: KafkaConnection,
    timeout: float = 30.0,
    name: Callable[[str], str] = _field_name,
) -> None:
    """Fetch metadata once; raise `KafkaAccessError` as soon as the cluster refuses the
    credentials or the TLS handshake, and at `timeout` when no broker answers.

    librdkafka retries a refused login forever, reporting each try to `error_cb`, and its
    metadata request would just time out: this turns the first such report into an error
    whose message names the settings to fix (`name`, as in `KafkaSecurity.check`).
    """
    hints = _access_hints(name)
    refused: list[KafkaError] = []
    others: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in hints:
            refused.append(error)  # raised below, with the fix
            return
        if error.code() != KafkaError._ALL_BROKERS_DOWN:  # says less than the cause before it
            others.append(error)
        log_client_error(error)

    admin = AdminClient(connection.librdkafka({"error_cb": on_error}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=0.5)
            return
        except KafkaException:
            admin.poll(0)
        if refused:
            error = refused[0]
            what, fix = hints[error.code()]
            raise KafkaAccessError(
                f"Kafka at {connection.bootstrap} {what} "
                f"({connection.security.describe()}): {error.str()}\n{fix}"
            )
        if time.monotonic() > deadline:
            last = f": {others[-1].str()}" if others else ""
            raise KafkaAccessError(
                f"no broker at {connection.bootstrap} answered within {timeout:.0f} s "
                f"({connection.security.describe()}){last}\nCheck {name('bootstrap')} and "
                f"{name('security_protocol')}: a client without TLS on a TLS listener, or the "
                "reverse, is disconnected like this too."
            )
