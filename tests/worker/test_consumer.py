"""The consumer's inline delivery: a delivery that must wait is finished by a task, and stays
cancellable as in Faust (`_WorkerConsumer._deliver`)."""

from __future__ import annotations

import asyncio

import pytest

from streams.worker.app import _Rest


async def _put(queue: asyncio.Queue[int], item: int) -> None:
    await queue.put(item)


def test_the_rest_of_a_waiting_delivery_finishes_once_it_can() -> None:
    async def scenario() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(0)
        delivery = _put(queue, 1)
        waiting_for = delivery.send(None)  # the first step, as `_deliver` takes it inline
        rest = asyncio.ensure_future(_Rest(delivery, waiting_for))
        await asyncio.sleep(0.01)
        assert not rest.done()
        assert queue.get_nowait() == 0  # room: the put can finish
        await asyncio.wait_for(rest, 5)
        assert queue.get_nowait() == 1

    asyncio.run(scenario())


def test_cancelling_the_rest_cancels_the_delivery() -> None:
    async def scenario() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(0)
        delivery = _put(queue, 1)
        rest = asyncio.ensure_future(_Rest(delivery, delivery.send(None)))
        await asyncio.sleep(0.01)
        rest.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rest
        assert queue.get_nowait() == 0 and queue.empty()  # the put never happened

    asyncio.run(scenario())
