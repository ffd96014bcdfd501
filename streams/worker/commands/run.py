"""`leadscore worker` and `leadscore demo`.

The worker checks everything it can before it consumes: options, the plans file (an invalid
one stops it with the backtest's error message), the topics (created when missing,
refused when an existing one has the wrong partition count), and the state (refused when it
no longer belongs to its topics: `state.guard`). Only then does Faust start.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import faust
from confluent_kafka import KafkaException

from streams.kafka.admin import TopicMismatchError, ensure_topics
from streams.kafka.security import KafkaAccessError, verify_access
from streams.scoring import PlanError
from streams.worker.app import build_worker
from streams.worker.commands import demo
from streams.worker.flow.dead_letters import DeadLetterTopicError
from streams.worker.plans.source import FileSource, NoPlanVersionError, PlanSource, TopicSource
from streams.worker.plans.topic import plans_topic
from streams.worker.settings import (
    SettingsError,
    WorkerSettings,
    add_arguments,
    resolve,
    setting_name,
)
from streams.worker.state.guard import StateMismatchError, StateTopics, check_state, reset_state

EXIT_USAGE = 2
EXIT_TOPICS = 3
EXIT_KAFKA = 4
EXIT_STATE = 5
ACCESS_TIMEOUT = 30.0
"""Seconds the start waits for a broker to answer before giving up (exit 4)."""


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `worker` and `demo` to the `leadscore` command."""
    worker = subparsers.add_parser(
        "worker",
        help="run the stream worker",
        description="Score tracking events from Kafka in real time. Every option can also be "
        "set with the environment variable shown; a flag wins over the variable.",
    )
    add_worker_arguments(worker)
    worker.set_defaults(handler=run_worker)
    demo.add_parser(subparsers)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings, and `--reset-state`, which has no environment variable: it is a one-off
    repair, and a variable left set would wipe the local state at every start."""
    add_arguments(parser)
    parser.add_argument(
        "--reset-state",
        action="store_true",
        help="delete the local state in the data dir first; it is rebuilt from the changelog",
    )


def run_worker(args: argparse.Namespace) -> int:
    """Validate, create topics, then run until SIGTERM or Ctrl-C."""
    try:
        settings = resolve(args)
        source = _plan_source(settings)
    except (SettingsError, NoPlanVersionError) as error:
        print(f"leadscore worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PlanError as error:
        print(f"leadscore: invalid plans: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (KafkaAccessError, KafkaException, TimeoutError) as error:  # reading the plans topic
        print(f"leadscore worker: {error}", file=sys.stderr)
        return EXIT_KAFKA
    worker = build_worker(settings, source.history)
    source.follow(worker.live, worker.app)
    state = StateTopics(
        settings.topics.events,
        worker.table.changelog_topic.get_topic_name(),
        settings.partitions,
        worker.app.conf.tabledir,
        worker.table.name,
    )
    if args.reset_state:
        reset_state(state)
    try:
        verify_access(settings.kafka, ACCESS_TIMEOUT, setting_name)
        ensure_topics(
            settings.kafka,
            worker.topic_specs(),
            replication_factor=settings.replication_factor,
        )
        check_state(settings.kafka, state)
        worker.dead_letter_limit()  # refuses a topic too small for dead letters
    except KafkaAccessError as error:
        print(f"leadscore worker: {error}", file=sys.stderr)
        return EXIT_KAFKA
    except (TopicMismatchError, DeadLetterTopicError) as error:
        print(f"leadscore worker: {error}", file=sys.stderr)
        return EXIT_TOPICS
    except StateMismatchError as error:
        print(f"leadscore worker: {error}", file=sys.stderr)
        return EXIT_STATE
    except KafkaException as error:
        print(
            f"leadscore worker: cannot reach Kafka at {settings.bootstrap}: {error}",
            file=sys.stderr,
        )
        return EXIT_KAFKA
    runner = faust.Worker(
        worker.app,
        loglevel=settings.log_level,
        quiet=True,
        logging_config=_logging_config(settings),
    )
    try:
        runner.execute_from_commandline()  # always ends in SystemExit
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1


def _plan_source(settings: WorkerSettings) -> PlanSource:
    """The plans file, or the plans topic read to its end (Kafka must answer first)."""
    if settings.plans is not None:
        return FileSource(settings.plans)
    verify_access(settings.kafka, ACCESS_TIMEOUT, setting_name)
    return TopicSource(settings.kafka, plans_topic(settings.topic_prefix))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`--log-json`), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _logging_config(settings: WorkerSettings) -> dict[str, Any] | None:
    if not settings.log_json:
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": settings.log_level.upper(), "handlers": ["stderr"]},
    }
