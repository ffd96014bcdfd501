"""`leadscore worker` and `leadscore demo`.

The worker checks everything it can before it consumes: options, the plans file (an invalid
one stops it with the backtest's error message), and the topics (created when missing,
refused when an existing one has the wrong partition count). Only then does Faust start.
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
from streams.scoring import PlanError, load_plans
from streams.worker import demo
from streams.worker.app import build_worker
from streams.worker.dead_letters import DeadLetterTopicError, read_max_message_bytes
from streams.worker.settings import SettingsError, WorkerSettings, add_arguments, resolve

EXIT_USAGE = 2
EXIT_TOPICS = 3
EXIT_KAFKA = 4


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `worker` and `demo` to the `leadscore` command."""
    worker = subparsers.add_parser(
        "worker",
        help="run the stream worker",
        description="Score tracking events from Kafka in real time. Every option can also be "
        "set with the environment variable shown; a flag wins over the variable.",
    )
    add_arguments(worker)
    worker.set_defaults(handler=run_worker)
    demo.add_parser(subparsers)


def run_worker(args: argparse.Namespace) -> int:
    """Validate, create topics, then run until SIGTERM or Ctrl-C."""
    try:
        settings = resolve(args)
        plans = load_plans(settings.plans)
    except SettingsError as error:
        print(f"leadscore worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PlanError as error:
        print(f"leadscore: invalid plans: {error}", file=sys.stderr)
        return EXIT_USAGE
    worker = build_worker(settings, plans)
    try:
        ensure_topics(settings.bootstrap, worker.topic_specs())
        read_max_message_bytes(settings.bootstrap, settings.topics.dead_letters)
    except (TopicMismatchError, DeadLetterTopicError) as error:
        print(f"leadscore worker: {error}", file=sys.stderr)
        return EXIT_TOPICS
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
