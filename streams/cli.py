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
from streams.worker import cli as worker_cli
from streams.worker import dlq


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadscore", description="Real-time lead scoring on Apache Kafka."
    )
    parser.add_argument("--version", action="version", version=f"leadscore {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (backtest_cli, explain, broker, worker_cli, dlq):
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
