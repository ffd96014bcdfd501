"""Worker options: flags win over `LEADSCORE_*` variables, which win over defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streams.kafka.security import PLAINTEXT, KafkaConnection, KafkaSecurity
from streams.worker.settings import (
    SettingsError,
    WorkerSettings,
    add_arguments,
    resolve,
    resolve_security,
)


def _settings(argv: list[str], env: dict[str, str] | None = None) -> WorkerSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve(parser.parse_args(argv), env or {})


def test_defaults_need_only_plans_and_bootstrap() -> None:
    settings = _settings(["--plans", "p.yaml", "--bootstrap", "k:9092"])
    assert settings.plans == Path("p.yaml")
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 6066)
    assert (settings.clock, settings.timer_interval, settings.partitions) == ("wall", 10.0, 6)
    assert settings.topics.events == "tracking-events"
    assert settings.topics.dead_letters == "tracking-events-dlq"
    assert settings.topics.ticks == "leadscore-timer-ticks"
    assert settings.topics.rerouted == "leadscore-rerouted"
    assert settings.lead_scores_format == "json"
    connect = _settings(
        ["--plans", "p.yaml", "--bootstrap", "k:9092"],
        {"LEADSCORE_LEAD_SCORES_FORMAT": "connect-json"},
    )
    assert connect.lead_scores_format == "connect-json"


def test_ticks_belong_to_one_app_while_the_shared_topics_do_not() -> None:
    settings = _settings(
        ["--plans", "p", "--bootstrap", "k", "--topic-prefix", "t.", "--app-id", "b"]
    )
    assert settings.topics.ticks == "t.b-timer-ticks"
    assert settings.topics.rerouted == "t.b-rerouted"
    assert settings.topics.events == "t.tracking-events"
    assert settings.faust_id == "t.b"


def test_environment_fills_in_and_flags_win() -> None:
    env = {
        "LEADSCORE_PLANS": "env.yaml",
        "LEADSCORE_KAFKA_BOOTSTRAP": "env:9092",
        "LEADSCORE_WEB_PORT": "7000",
        "LEADSCORE_CLOCK": "event",
        "LEADSCORE_TOPIC_PREFIX": "prod.",
        "LEADSCORE_LOG_JSON": "true",
        "LEADSCORE_COMMIT_INTERVAL": "5s",
    }
    settings = _settings(["--web-port", "7001", "--timer-interval", "30s"], env)
    assert (settings.plans, settings.bootstrap) == (Path("env.yaml"), "env:9092")
    assert settings.commit_interval == 5.0
    assert (settings.web_port, settings.clock, settings.timer_interval) == (7001, "event", 30.0)
    assert settings.topics.alerts == "prod.sales-alerts"
    assert settings.faust_id == "prod.leadscore"
    assert settings.log_json is True


REQUIRED = {"LEADSCORE_PLANS": "p.yaml", "LEADSCORE_KAFKA_BOOTSTRAP": "k:1"}
SASL = {**REQUIRED, "LEADSCORE_SECURITY_PROTOCOL": "SASL_SSL"}


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--plans", "p.yaml"], {}, "--bootstrap (or LEADSCORE_KAFKA_BOOTSTRAP) is required"),
        (
            ["--bootstrap", "k:1"],
            {},
            "set --plans (LEADSCORE_PLANS) (a plans file) or --plans-topic",
        ),
        (
            ["--plans-topic"],
            REQUIRED,
            "--plans (LEADSCORE_PLANS) and --plans-topic (LEADSCORE_PLANS_TOPIC) are both set",
        ),
        ([], {**REQUIRED, "LEADSCORE_CLOCK": "lunar"}, "LEADSCORE_CLOCK: expected one of"),
        (
            [],
            {**REQUIRED, "LEADSCORE_LEAD_SCORES_FORMAT": "avro"},
            "LEADSCORE_LEAD_SCORES_FORMAT: expected one of json, connect-json",
        ),
        ([], {**REQUIRED, "LEADSCORE_WEB_PORT": "99999"}, "LEADSCORE_WEB_PORT: expected a TCP"),
        (["--partitions", "0"], REQUIRED, "--partitions: expected a positive integer"),
        (["--timer-interval", "soon"], REQUIRED, "--timer-interval: expected a duration"),
        (
            [],
            SASL,
            "--sasl-username (LEADSCORE_SASL_USERNAME) is required with "
            "--security-protocol (LEADSCORE_SECURITY_PROTOCOL) SASL_SSL",
        ),
        (
            ["--sasl-username", "u"],
            SASL,
            "LEADSCORE_SASL_PASSWORD (or --sasl-password-file) is required with",
        ),
        (
            ["--sasl-username", "u", "--sasl-password-file", "/nonexistent/password"],
            SASL,
            "--sasl-password-file (LEADSCORE_SASL_PASSWORD_FILE): cannot read "
            "/nonexistent/password: No such file or directory",
        ),
        (
            ["--ssl-cafile", "/nonexistent/ca.pem"],
            {**REQUIRED, "LEADSCORE_SECURITY_PROTOCOL": "SSL"},
            "--ssl-cafile (LEADSCORE_SSL_CAFILE): /nonexistent/ca.pem is not a file",
        ),
        (
            ["--ssl-cafile", "/nonexistent/ca.pem"],
            REQUIRED,
            "is set, but --security-protocol (LEADSCORE_SECURITY_PROTOCOL) is PLAINTEXT",
        ),
        (["--commit-interval", "0"], REQUIRED, "--commit-interval: expected a positive"),
        (
            ["--history-size", "-1"],
            REQUIRED,
            "--history-size: expected 0 (off) to 1000 changes per plan, got '-1'",
        ),
        (
            [],
            {**REQUIRED, "LEADSCORE_HISTORY_SIZE": "twenty"},
            "LEADSCORE_HISTORY_SIZE: expected 0 (off) to 1000 changes per plan, got 'twenty'",
        ),
        (["--history-size", "1001"], REQUIRED, "--history-size: expected 0 (off) to 1000"),
        (["--lateness=-3600"], REQUIRED, "--lateness: expected a duration of 0 or more"),
    ],
)
def test_bad_options_name_the_flag_or_variable(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        _settings(argv, env)
    assert message in str(raised.value)


def test_history_size_defaults_to_20_and_may_be_off() -> None:
    assert _settings(["--plans", "p", "--bootstrap", "k"]).history_size == 20
    assert _settings(["--plans", "p", "--bootstrap", "k", "--history-size", "0"]).history_size == 0
    env = {"LEADSCORE_HISTORY_SIZE": "1000"}
    assert _settings(["--plans", "p", "--bootstrap", "k"], env).history_size == 1000


def test_lateness_defaults_to_a_day_and_may_be_off() -> None:
    assert _settings(["--plans", "p", "--bootstrap", "k"]).lateness == 86400.0
    assert _settings(["--plans", "p", "--bootstrap", "k", "--lateness", "0"]).lateness == 0.0
    env = {"LEADSCORE_LATENESS": "7d"}
    assert _settings(["--plans", "p", "--bootstrap", "k"], env).lateness == 7 * 86400.0


def test_topic_settings_from_flags_and_environment() -> None:
    defaults = _settings(["--plans", "p", "--bootstrap", "k"])
    assert (defaults.replication_factor, defaults.erasure_bound) == (3, 86400.0)
    assert (defaults.output_retention, defaults.dlq_retention) == (7 * 86400.0, 7 * 86400.0)
    env = {"LEADSCORE_DLQ_RETENTION": "30d", "LEADSCORE_ERASURE_BOUND": "6h"}
    settings = _settings(
        [
            "--plans",
            "p",
            "--bootstrap",
            "k",
            "--replication-factor",
            "2",
            "--output-retention",
            "2w",
        ],
        env,
    )
    assert settings.replication_factor == 2
    assert settings.output_retention == 14 * 86400.0
    assert (settings.dlq_retention, settings.erasure_bound) == (30 * 86400.0, 6 * 3600.0)
    with pytest.raises(SettingsError, match="LEADSCORE_ERASURE_BOUND"):
        _settings(["--plans", "p", "--bootstrap", "k"], {"LEADSCORE_ERASURE_BOUND": "0"})


def test_security_defaults_to_plaintext_and_comes_from_flags_and_variables() -> None:
    assert _settings([], REQUIRED).security == PLAINTEXT
    env = {
        **REQUIRED,
        "LEADSCORE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LEADSCORE_SASL_USERNAME": "env-user",
        "LEADSCORE_SASL_PASSWORD": "from-env",
    }
    settings = _settings(["--sasl-username", "flag-user", "--sasl-mechanism", "SCRAM-SHA-512"], env)
    assert settings.security == KafkaSecurity(
        "SASL_PLAINTEXT", "SCRAM-SHA-512", "flag-user", "from-env"
    )
    assert settings.kafka == KafkaConnection("k:1", settings.security)
    assert resolve_security(env).sasl_username == "env-user"


def test_the_password_is_never_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for argv in (["--sasl-password", "visible-in-ps"], ["--sasl-password=visible-in-ps"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        error = capsys.readouterr().err
        assert "set LEADSCORE_SASL_PASSWORD, or --sasl-password-file" in error
        assert "visible-in-ps" not in error
    assert "LEADSCORE_SASL_PASSWORD" in parser.format_help()


def test_the_password_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("mounted secret\n")
    env = {**REQUIRED, "LEADSCORE_SECURITY_PROTOCOL": "SASL_SSL", "LEADSCORE_SASL_USERNAME": "u"}
    settings = _settings(["--sasl-password-file", str(secret)], env)
    assert settings.security.sasl_password == "mounted secret"
    with pytest.raises(SettingsError, match="LEADSCORE_SASL_PASSWORD are both set"):
        _settings(["--sasl-password-file", str(secret)], {**env, "LEADSCORE_SASL_PASSWORD": "x"})
