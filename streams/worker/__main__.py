"""`python -m streams.worker [options]`: the worker, without the `leadscore` wrapper."""

from __future__ import annotations

import argparse
import sys

from streams.worker.commands.run import add_worker_arguments, run_worker


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.worker")
    add_worker_arguments(parser)
    return run_worker(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
