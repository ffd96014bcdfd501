"""A worker whose core fails on events of type `test.boom`, to test how a bug is contained.

Run as `python -m tests.worker.failing_worker [worker options]`.
"""

from __future__ import annotations

import sys

from streams.models.events import TrackingEvent
from streams.scoring import PlanSet, Step, score_event
from streams.worker import processor
from streams.worker.__main__ import main

BOOM = "test.boom"


def _failing_score_event(state: object, event: TrackingEvent, plans: PlanSet) -> Step:
    if event.type == BOOM:
        raise RuntimeError("simulated bug in the scoring core")
    return score_event(state, event, plans)  # type: ignore[arg-type]


if __name__ == "__main__":
    processor.score_event = _failing_score_event  # type: ignore[attr-defined]
    sys.exit(main())
