"""Seeks back to the committed offsets, done by the fetch loop itself between two batches.

Why: at the end of every recovery Faust seeks the input partitions back to their committed
offsets (`Consumer.perform_seek`) from its recovery task, while the fetch loop is already
handing out the input messages it fetched from the position before the seek. The worker's
direct path processes a message as soon as it is handed out, so messages of a new owner were
processed before the seek and again after it, and the seek reset Faust's read offset behind
the fetch position: the next message then looked like a gap after the committed offset, and
the gap entry covered offsets already acknowledged. Faust's acknowledgement list then held
those offsets twice, its run of consecutive offsets broke at the first duplicate on every
commit, and the committed offset moved by about one offset per commit interval while every
event had been processed (issue 13). Run by the fetch loop between batches, a seek cannot
overlap a message in hand, nor a batch fetched before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class SeekGate:
    """Runs `seek` in the fetch loop's task; other tasks ask for it and wait."""

    def __init__(self, seek: Callable[[], Awaitable[None]]) -> None:
        self._seek = seek
        self._loop_task: asyncio.Task[Any] | None = None
        self._requested: asyncio.Future[None] | None = None

    @property
    def pending(self) -> bool:
        """A seek is waiting: input messages handed out now come again after it."""
        return self._requested is not None

    def attach(self) -> None:
        """Called by the fetch loop when it starts; it calls `serve()` between batches."""
        self._loop_task = asyncio.current_task()

    def detach(self) -> None:
        """Called by the fetch loop when it ends."""
        self._loop_task = None

    async def request(self) -> None:
        """Seek, in the fetch loop when one runs in another task; return when done."""
        loop_task = self._loop_task
        if loop_task is None or loop_task is asyncio.current_task():
            await self._seek()
            return
        if self._requested is None:
            self._requested = asyncio.get_running_loop().create_future()
        requested = self._requested
        await asyncio.wait({requested, loop_task}, return_when=asyncio.FIRST_COMPLETED)
        if requested.done():
            requested.result()
        else:  # the fetch loop stopped first: nothing hands messages out any more
            self._requested = None
            await self._seek()

    async def serve(self) -> None:
        """In the fetch loop, between batches: run the seek asked for, if any."""
        requested, self._requested = self._requested, None
        if requested is None:
            return
        try:
            await self._seek()
        except Exception as error:
            requested.set_exception(error)
        else:
            requested.set_result(None)
