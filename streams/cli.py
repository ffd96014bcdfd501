"""The `leadscore` command: one entry point, each subcommand registered by its own package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from streams import __version__
from streams.backtest import cli as backtest_cli
from streams.backtest import explain
from streams.kafka import broker
from streams.scoring import PlanError
from streams.worker.commands import dlq, publish
from streams.worker.commands import run as worker_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadscore", description="Real-time lead scoring on Apache Kafka."
    )
    parser.add_argument("--version", action="version", version=f"leadscore {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backtest_cli.add_cli(subparsers, plan_commands=(publish.add_parser,))
    for module in (explain, broker, worker_cli, dlq):
        module.add_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except PlanError as error:
        print(f"leadscore: invalid plans: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
