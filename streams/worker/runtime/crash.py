"""Stopping without a commit, with a deadline: a worker that must not write may not hang.

After a fencing or a failure of the shell, the worker poisons its states (nothing more is
persisted) and crashes the app, and Faust stops its services. That stop can wait forever: a
commit that had passed the persist before the failure goes on to commit the consumed offsets
through Faust's consumer thread, which the crash has stopped, and the reply never comes (seen
in tests/worker/runtime/test_fencing.py's frozen worker, whose stop then never ended). A
process that stops without writing loses nothing by being cut short, so once
`STOP_DEADLINE` has passed it exits at once, with the code of a crash; the orchestrator
restarts it, and its successor replays from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

STOP_DEADLINE = 20.0
"""Seconds a crashed worker may take to stop before it exits without finishing."""
EXIT_CRASHED = 1
"""Python's exit code for an uncaught exception: a stop cut short reads as a crash."""


async def crash_without_commit(
    poison: Callable[[BaseException], None],
    crash: Callable[[BaseException], Awaitable[None]],
    error: BaseException,
    exit_now: Callable[[int], None] = os._exit,
) -> None:
    """Poison, arm the deadline, and crash the app."""
    poison(error)

    def too_late() -> None:
        logger.critical(
            "still stopping %.0f s after %r, with nothing left to write; exiting now",
            STOP_DEADLINE,
            error,
        )
        logging.shutdown()
        exit_now(EXIT_CRASHED)

    asyncio.get_running_loop().call_later(STOP_DEADLINE, too_late)
    await crash(error)
