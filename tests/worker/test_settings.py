"""Worker options: flags win over `LEADSCORE_*` variables, which win over defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streams.worker.settings import SettingsError, WorkerSettings, add_arguments, resolve


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


def test_ticks_belong_to_one_app_while_the_shared_topics_do_not() -> None:
    settings = _settings(
        ["--plans", "p", "--bootstrap", "k", "--topic-prefix", "t.", "--app-id", "b"]
    )
    assert settings.topics.ticks == "t.b-timer-ticks"
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


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--plans", "p.yaml"], {}, "--bootstrap (or LEADSCORE_KAFKA_BOOTSTRAP) is required"),
        (["--bootstrap", "k:1"], {}, "--plans (or LEADSCORE_PLANS) is required"),
        ([], {**REQUIRED, "LEADSCORE_CLOCK": "lunar"}, "LEADSCORE_CLOCK: expected one of"),
        ([], {**REQUIRED, "LEADSCORE_WEB_PORT": "99999"}, "LEADSCORE_WEB_PORT: expected a TCP"),
        (["--partitions", "0"], REQUIRED, "--partitions: expected a positive integer"),
        (["--timer-interval", "soon"], REQUIRED, "--timer-interval: expected a duration"),
        (["--commit-interval", "0"], REQUIRED, "--commit-interval: expected a positive"),
    ],
)
def test_bad_options_name_the_flag_or_variable(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        _settings(argv, env)
    assert message in str(raised.value)
