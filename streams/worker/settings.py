"""Worker configuration: command-line flags over `LEADSCORE_*` environment variables.

Twelve-factor: every option can come from the environment (containers, systemd units), and a
flag given on the command line wins. Each option is declared once, in `OPTIONS`, so the flag,
its environment variable, its default and its help text cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streams.kafka.security import (
    MECHANISMS,
    PLAINTEXT,
    PROTOCOLS,
    KafkaConnection,
    KafkaSecurity,
    SecurityError,
)
from streams.models.durations import parse_duration
from streams.worker.state import history
from streams.worker.state.leads import LEAD_SCORES_FORMATS, LeadScoresFormat

Clock = Literal["wall", "event"]
ENV_PREFIX = "LEADSCORE_"
COMMIT_INTERVAL = 0.1
"""Seconds between commits, as Kafka Streams under exactly-once: outputs go out in the
worker's transaction, which each commit ends (`fencing.py`), so a `read_committed` reader sees
them only then. Measured at 500 events/s: p99 206 ms here, 3.0 s at Faust's 2.8 s; at full load
about 13% fewer events/s, as each commit persists (persists then space themselves out)."""


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: `--flag`, `LEADSCORE_<NAME>`, how to parse it, and its default."""

    name: str
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    env: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False
    """A flag without a value (`--log-json`); its variable takes true/false."""
    env_only: bool = False
    """No flag, only the variable: a flag's value (a password) shows in `ps`."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return self.env or ENV_PREFIX + self.name.upper()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def _history_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= history.MAX_SIZE:
        raise ValueError(f"expected 0 (off) to {history.MAX_SIZE} changes per plan, got {text!r}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(f"expected a TCP port, got {text!r}")
    return value


def _duration(text: str) -> float:
    """`10`, `2.5` or a plan-style duration such as `30s` or `5m`."""
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def _seconds(text: str) -> float:
    value = _duration(text)
    if value <= 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    return value


def _seconds_or_zero(text: str) -> float:
    """For a setting where 0 switches a feature off."""
    value = _duration(text)
    if value < 0:
        raise ValueError(f"expected a duration of 0 or more, got {text!r}")
    return value


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


OPTIONS: tuple[Option, ...] = (
    Option(
        "plans",
        "scoring plans YAML file, reloaded on SIGHUP (this or --plans-topic)",
        _optional_path,
        "",
    ),
    Option(
        "plans_topic",
        "follow the plan versions published to <topic-prefix>leadscore-plans with "
        "`leadscore plans publish` (instead of --plans)",
        _flag,
        False,
        switch=True,
    ),
    Option(
        "bootstrap",
        "Kafka bootstrap servers, host:port[,host:port] (required)",
        env="LEADSCORE_KAFKA_BOOTSTRAP",
    ),
    Option(
        "partitions",
        "partitions of every co-partitioned topic when they are created",
        _positive_int,
        6,
    ),
    Option("data_dir", "directory for the RocksDB state", Path, Path("data")),
    Option("web_host", "address the HTTP API binds to", str, "127.0.0.1"),
    Option("web_port", "port of the HTTP API", _port, 6066),
    Option(
        "advertised_url",
        "URL other workers use to reach this one's HTTP API (empty: http://WEB_HOST:WEB_PORT)",
        str,
        "",
    ),
    Option(
        "clock",
        "what drives timers: wall time, or the largest event time seen on the partition",
        str,
        "wall",
        choices=("wall", "event"),
    ),
    Option("timer_interval", "seconds between timer passes (also 10s, 1m)", _seconds, 10.0),
    Option(
        "session_timeout",
        "seconds before a dead worker's partitions move to another worker (also 30s)",
        _seconds,
        30.0,
    ),
    Option(
        "commit_interval",
        "seconds between offset commits; each makes states durable and outputs visible to "
        "read_committed consumers (also 0.5, 5s; raise it for bulk back-fills)",
        _seconds,
        COMMIT_INTERVAL,
    ),
    Option(
        "history_size",
        "score changes kept per contact and plan for GET /contacts/{id}/history (0: off)",
        _history_size,
        history.DEFAULT_SIZE,
    ),
    Option("topic_prefix", "prefix of every topic and of the consumer group", str, ""),
    Option("app_id", "Faust application id: consumer group and internal topics", str, "leadscore"),
    Option("log_level", "log level", str, "info", choices=("debug", "info", "warning", "error")),
    Option("log_json", "log one JSON object per line", _flag, False, switch=True),
    Option(
        "replication_factor",
        "replicas of the topics the worker creates (capped at the number of brokers)",
        _positive_int,
        3,
    ),
    Option(
        "output_retention",
        "retention of sales-alerts and score-updates when the worker creates them (also 7d)",
        _seconds,
        7 * 86400.0,
    ),
    Option(
        "dlq_retention",
        "retention of the dead-letter topic when the worker creates it (also 7d)",
        _seconds,
        7 * 86400.0,
    ),
    Option(
        "lead_scores_format",
        "value format of lead-scores: json (schemas/lead-scores.schema.json), or connect-json "
        "(Kafka Connect's schema envelope, for JDBC sink connectors: deploy/connect/)",
        str,
        "json",
        choices=LEAD_SCORES_FORMATS,
    ),
    Option(
        "erasure_bound",
        "time within which the changelog compacts away an erased contact's data (also 1d)",
        _seconds,
        86400.0,
    ),
    Option(
        "lateness",
        "how late an event may arrive and still score exactly as in time order (also 1d; "
        "0 keeps no window)",
        _seconds_or_zero,
        86400.0,
    ),
    # Security (streams/kafka/security.py): librdkafka's and Faust's names for the same things.
    Option(
        "security_protocol",
        "how every Kafka client connects",
        str,
        "PLAINTEXT",
        choices=PROTOCOLS,
    ),
    Option("sasl_mechanism", "SASL mechanism", str, "PLAIN", choices=MECHANISMS),
    Option("sasl_username", "SASL user name (with SASL_SSL or SASL_PLAINTEXT)", str, ""),
    Option("sasl_password", "SASL password", str, "", env_only=True),
    Option(
        "sasl_password_file",
        "file holding the SASL password (a mounted secret), instead of LEADSCORE_SASL_PASSWORD",
        _optional_path,
        "",
    ),
    Option(
        "ssl_cafile",
        "CA certificates (PEM) that signed the brokers' certificates (default: the system's)",
        _optional_path,
        "",
    ),
    Option(
        "ssl_certfile",
        "client certificate (PEM), for clusters that authenticate clients by TLS",
        _optional_path,
        "",
    ),
    Option("ssl_keyfile", "private key (PEM) of --ssl-certfile", _optional_path, ""),
)
SECURITY_OPTIONS = frozenset(field.name for field in dataclasses.fields(KafkaSecurity)) | {
    "sasl_password_file"
}


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic the worker reads or writes, all under one prefix."""

    events: str
    alerts: str
    updates: str
    dead_letters: str
    ticks: str
    rerouted: str
    leads: str
    """Every contact's current scores, compacted (`streams.worker.state.leads`)."""

    @classmethod
    def with_prefix(cls, prefix: str, app_id: str = "leadscore") -> TopicNames:
        """Ticks and re-routed events are internal to one application, like its changelog:
        two apps with other ids on the same prefix must not consume each other's."""
        return cls(
            events=f"{prefix}tracking-events",
            alerts=f"{prefix}sales-alerts",
            updates=f"{prefix}score-updates",
            dead_letters=f"{prefix}tracking-events-dlq",
            ticks=f"{prefix}{app_id}-timer-ticks",
            rerouted=f"{prefix}{app_id}-rerouted",
            leads=f"{prefix}lead-scores",
        )


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Resolved configuration of one worker process."""

    plans: Path | None
    bootstrap: str
    plans_topic: bool = False
    partitions: int = 6
    data_dir: Path = Path("data")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    advertised_url: str = ""
    clock: Clock = "wall"
    timer_interval: float = 10.0
    session_timeout: float = 30.0
    commit_interval: float = COMMIT_INTERVAL
    history_size: int = history.DEFAULT_SIZE
    topic_prefix: str = ""
    app_id: str = "leadscore"
    log_level: str = "info"
    log_json: bool = False
    replication_factor: int = 3
    output_retention: float = 7 * 86400.0
    dlq_retention: float = 7 * 86400.0
    erasure_bound: float = 86400.0
    lateness: float = 86400.0
    """How far behind a contact's latest event an event is scored exactly (`score_event`)."""
    security: KafkaSecurity = PLAINTEXT
    lead_scores_format: LeadScoresFormat = "json"
    lead_scores: bool = True
    """Publish `lead-scores` and keep the leads index. Not an option: off only in the
    benchmark that measures what they cost (bench/leads_off_worker.py), since contacts that
    change while it is off leave the index until their next change."""

    @property
    def kafka(self) -> KafkaConnection:
        """What every Kafka client of the worker is built from."""
        return KafkaConnection(self.bootstrap, self.security)

    @property
    def topics(self) -> TopicNames:
        return TopicNames.with_prefix(self.topic_prefix, self.app_id)

    @property
    def faust_id(self) -> str:
        """The consumer group; it names the changelog topic, so it carries the prefix too."""
        return f"{self.topic_prefix}{self.app_id}"

    @property
    def web_url(self) -> str:
        """Where `GET /contacts/{id}` is forwarded to when this worker owns the contact."""
        return self.advertised_url or f"http://{self.web_host}:{self.web_port}"


class SettingsError(ValueError):
    """A missing or malformed option; the message names the flag and the variable."""


def add_arguments(parser: argparse.ArgumentParser, names: Collection[str] | None = None) -> None:
    """Declare every option (or those in `names`) as a flag; defaults stay None so the
    environment can fill in."""
    for option in OPTIONS:
        if names is not None and option.name not in names:
            continue
        if option.env_only:
            parser.add_argument(
                option.flag, nargs="?", action=_Refused, help=argparse.SUPPRESS, env=option.env_name
            )
            continue
        default = f", default {option.default}" if option.default not in (None, "") else ""
        help_text = f"{option.help} [env {option.env_name}{default}]"
        if option.switch:
            parser.add_argument(
                option.flag, dest=option.name, action="store_const", const="true", help=help_text
            )
        else:
            parser.add_argument(
                option.flag, dest=option.name, default=None, choices=option.choices, help=help_text
            )


class _Refused(argparse.Action):
    """A flag refused with a pointer to its variable: without it, argparse would take
    `--sasl-password` as an abbreviation of `--sasl-password-file`."""

    def __init__(self, *args: Any, env: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env = env

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{option_string} is not accepted (the command line shows in ps): "
            f"set {self.env}, or --sasl-password-file"
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WorkerSettings:
    """Flag, else environment variable, else default; parsed and checked."""
    env = os.environ if environ is None else environ
    values = _values(OPTIONS, args, env)
    security = _security(values)  # takes its options out of `values`
    values.setdefault("plans", None)
    if values["plans"] is None and not values.get("plans_topic"):
        raise SettingsError(
            f"set {setting_name('plans')} (a plans file) or {setting_name('plans_topic')} "
            "(versions published with `leadscore plans publish`)"
        )
    if values["plans"] is not None and values.get("plans_topic"):
        raise SettingsError(
            f"{setting_name('plans')} and {setting_name('plans_topic')} are both set: keep one "
            "(publish the file with `leadscore plans publish` to use the topic)"
        )
    return WorkerSettings(**values, security=security)


def resolve_security(environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """The security settings alone, from the environment (`leadscore demo`, the benchmark)."""
    env = os.environ if environ is None else environ
    options = [option for option in OPTIONS if option.name in SECURITY_OPTIONS]
    return _security(_values(options, argparse.Namespace(), env))


CLIENT_OPTIONS = SECURITY_OPTIONS | {"bootstrap", "topic_prefix", "app_id"}
"""The options of a tool that works on a worker's topics (`leadscore dlq replay`)."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Where the cluster is, how to get in, and whose topics: `CLIENT_OPTIONS` resolved."""

    kafka: KafkaConnection
    topics: TopicNames
    group: str
    """The worker's consumer group (`WorkerSettings.faust_id`), the stem of the tool's own."""
    prefix: str = ""
    """The topic prefix, for topics outside `TopicNames` (the plans topic)."""


def resolve_client(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ClientSettings:
    """`CLIENT_OPTIONS` as the worker resolves them: flag, variable, default, checked."""
    env = os.environ if environ is None else environ
    options = [option for option in OPTIONS if option.name in CLIENT_OPTIONS]
    values = _values(options, args, env)
    security = _security(values)
    default = {option.name: option.default for option in options}
    prefix = values.get("topic_prefix", default["topic_prefix"])
    app_id = values.get("app_id", default["app_id"])
    return ClientSettings(
        KafkaConnection(values["bootstrap"], security),
        TopicNames.with_prefix(prefix, app_id),
        f"{prefix}{app_id}",
        prefix,
    )


def setting_name(name: str) -> str:
    """How an operator sets option `name`, for messages: `--flag (LEADSCORE_NAME)`."""
    option = next(option for option in OPTIONS if option.name == name)
    if option.env_only:
        return f"{option.env_name} (or --sasl-password-file)"
    return f"{option.flag} ({option.env_name})"


def _security(values: dict[str, Any]) -> KafkaSecurity:
    """Take the security options out of `values`, read the password file, check them."""
    fields = {name: values.pop(name) for name in SECURITY_OPTIONS if name in values}
    password_file: Path | None = fields.pop("sasl_password_file", None)
    if password_file is not None:
        if fields.get("sasl_password"):
            raise SettingsError(
                f"{setting_name('sasl_password_file')} and LEADSCORE_SASL_PASSWORD are both "
                "set: keep one"
            )
        try:
            fields["sasl_password"] = password_file.read_text().rstrip("\r\n")
        except OSError as error:
            raise SettingsError(
                f"{setting_name('sasl_password_file')}: cannot read {password_file}: "
                f"{error.strerror}"
            ) from None
    security = KafkaSecurity(**fields)
    try:
        security.check(setting_name)
    except SecurityError as error:
        raise SettingsError(str(error)) from None
    return security


def _values(
    options: Iterable[Option], args: argparse.Namespace, env: Mapping[str, str]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option in options:
        text = getattr(args, option.name, None)
        source = option.flag
        if text is None and option.env_name in env:
            text, source = env[option.env_name], option.env_name
        if text is None:
            if option.default is None:
                raise SettingsError(f"{option.flag} (or {option.env_name}) is required")
            continue
        if option.choices and text not in option.choices:
            raise SettingsError(f"{source}: expected one of {', '.join(option.choices)}")
        try:
            values[option.name] = option.parse(text)
        except ValueError as error:
            raise SettingsError(f"{source}: {error}") from None
    return values
