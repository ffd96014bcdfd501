"""Seeks asked for by other tasks run in the fetch loop, between two batches (`SeekGate`)."""

from __future__ import annotations

import asyncio

import pytest

from streams.worker.seeking import SeekGate


class Seeks:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[object] | None] = []
        self.error: Exception | None = None

    async def seek(self) -> None:
        self.tasks.append(asyncio.current_task())
        if self.error is not None:
            raise self.error


def test_a_seek_asked_for_by_another_task_waits_for_the_fetch_loop() -> None:
    async def scenario() -> None:
        seeks = Seeks()
        gate = SeekGate(seeks.seek)
        batch_done = asyncio.Event()

        async def fetch_loop() -> None:
            gate.attach()
            try:
                await batch_done.wait()  # a batch in hand
                await gate.serve()
            finally:
                gate.detach()

        loop = asyncio.create_task(fetch_loop())
        await asyncio.sleep(0)
        request = asyncio.create_task(gate.request())
        await asyncio.sleep(0.01)
        assert gate.pending and not request.done() and not seeks.tasks
        batch_done.set()
        await asyncio.wait_for(request, 5)
        assert seeks.tasks == [loop] and not gate.pending
        await loop

    asyncio.run(scenario())


def test_without_a_fetch_loop_the_seek_runs_at_once() -> None:
    async def scenario() -> None:
        seeks = Seeks()
        gate = SeekGate(seeks.seek)
        await gate.request()
        assert seeks.tasks == [asyncio.current_task()]

    asyncio.run(scenario())


def test_a_fetch_loop_that_stops_lets_the_waiting_seek_run() -> None:
    async def scenario() -> None:
        seeks = Seeks()
        gate = SeekGate(seeks.seek)
        stop = asyncio.Event()

        async def fetch_loop() -> None:
            gate.attach()
            try:
                await stop.wait()
            finally:
                gate.detach()

        loop = asyncio.create_task(fetch_loop())
        await asyncio.sleep(0)
        request = asyncio.create_task(gate.request())
        await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(request, 5)
        assert seeks.tasks == [request] and not gate.pending
        await loop

    asyncio.run(scenario())


def test_a_failed_seek_fails_the_request() -> None:
    async def scenario() -> None:
        seeks = Seeks()
        seeks.error = RuntimeError("seek failed")
        gate = SeekGate(seeks.seek)
        served = asyncio.Event()

        async def fetch_loop() -> None:
            gate.attach()
            try:
                while not gate.pending:
                    await asyncio.sleep(0)
                await gate.serve()
                served.set()
            finally:
                gate.detach()

        loop = asyncio.create_task(fetch_loop())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="seek failed"):
            await asyncio.wait_for(gate.request(), 5)
        await loop
        assert served.is_set()

    asyncio.run(scenario())
