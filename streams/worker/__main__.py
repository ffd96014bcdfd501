"""`python -m streams.worker [options]`: the worker, without the `leadscore` wrapper."""

from __future__ import annotations

import argparse
import sys

from streams.worker.cli import run_worker
from streams.worker.settings import add_arguments


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.worker")
    add_arguments(parser)
    return run_worker(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
