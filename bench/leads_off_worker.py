"""The worker without `lead-scores` and the leads index, for bench/leads.py only.

Run as `python -m bench.leads_off_worker [worker options]`. Not a worker option on purpose:
contacts that change while it is off leave the index until their next change.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from streams.worker.__main__ import main
from streams.worker.commands import run as cli
from streams.worker.settings import WorkerSettings

_resolve = cli.resolve


def _without_leads(args: argparse.Namespace) -> WorkerSettings:
    return dataclasses.replace(_resolve(args), lead_scores=False)


if __name__ == "__main__":
    cli.resolve = _without_leads
    sys.exit(main())
