"""A worker whose core fails on events of type `test.boom` (`tests.support.BOOM`), to test how
a bug is contained, and which dies on `test.crash`, to test a worker gone before any commit.

Run as `python -m tests.worker.failing_worker [worker options]`.
"""

from __future__ import annotations

import os
import sys

from streams.models.events import TrackingEvent
from streams.scoring import ContactState, PlanSet, Step
from streams.worker.__main__ import main
from streams.worker.flow import processor
from tests.support import failing_score_event

CRASH = "test.crash"
CRASH_EXIT_CODE = 70


def _score_event(
    state: ContactState | None, event: TrackingEvent, plans: PlanSet, lateness: float = 0.0
) -> Step:
    if event.type == CRASH:
        os._exit(CRASH_EXIT_CODE)  # the process dies in the middle of an event
    return failing_score_event(state, event, plans, lateness)


if __name__ == "__main__":
    processor.score_event = _score_event  # type: ignore[attr-defined]
    sys.exit(main())
