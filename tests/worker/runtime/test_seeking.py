"""Seeks asked for by other tasks run in the fetch loop, between two batches (`SeekGate`)."""

from __future__ import annotations

import asyncio

import pytest

from streams.worker.runtime.seeking import SeekGate


class Seeks:
    """A seek that records the task it ran in, and fails when told to."""

    def __init__(self, error: Exception | None = None) -> None:
        self.tasks: list[asyncio.Task[object] | None] = []
        self.error = error

    async def seek(self) -> None:
        self.tasks.append(asyncio.current_task())
        if self.error is not None:
            raise self.error


async def fetch_loop(gate: SeekGate, batch_done: asyncio.Event, *, serve: bool) -> None:
    """A fetch loop with one batch in hand until `batch_done`; then it serves, or stops."""
    gate.attach()
    try:
        await batch_done.wait()
        if serve:
            await gate.serve()
    finally:
        gate.detach()


async def requested_while_a_batch_is_in_hand(
    seeks: Seeks, *, serve: bool
) -> tuple[asyncio.Task[None], asyncio.Task[None], SeekGate]:
    """Start a fetch loop and a request; check the request waits; then end the batch."""
    gate = SeekGate(seeks.seek)
    batch_done = asyncio.Event()
    loop = asyncio.create_task(fetch_loop(gate, batch_done, serve=serve))
    await asyncio.sleep(0)
    request = asyncio.create_task(gate.request())
    await asyncio.sleep(0.01)
    assert gate.pending and not request.done() and not seeks.tasks
    batch_done.set()
    return loop, request, gate


@pytest.mark.parametrize(
    "serve", [pytest.param(True, id="the-loop-serves"), pytest.param(False, id="the-loop-stops")]
)
def test_a_seek_asked_for_by_another_task_runs_in_the_fetch_loop_or_once_it_stopped(
    serve: bool,
) -> None:
    async def scenario() -> None:
        seeks = Seeks()
        loop, request, gate = await requested_while_a_batch_is_in_hand(seeks, serve=serve)
        await asyncio.wait_for(request, 5)
        assert seeks.tasks == [loop if serve else request] and not gate.pending
        await loop

    asyncio.run(scenario())


def test_a_failed_seek_fails_the_request() -> None:
    async def scenario() -> None:
        seeks = Seeks(RuntimeError("seek failed"))
        loop, request, _ = await requested_while_a_batch_is_in_hand(seeks, serve=True)
        with pytest.raises(RuntimeError, match="seek failed"):
            await asyncio.wait_for(request, 5)
        assert seeks.tasks == [loop]
        await loop

    asyncio.run(scenario())


def test_without_a_fetch_loop_the_seek_runs_at_once() -> None:
    async def scenario() -> None:
        seeks = Seeks()
        await SeekGate(seeks.seek).request()
        assert seeks.tasks == [asyncio.current_task()]

    asyncio.run(scenario())
