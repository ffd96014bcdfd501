"""The consumer's inline delivery: a delivery that must wait is finished by a task, and stays
cancellable as in Faust (`_WorkerConsumer._deliver`); a fetch asks for the partitions active
when it was made (`_WorkerConsumer._getmany`)."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

from streams.worker.runtime.faust_app import _Rest, _WorkerConsumer


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


class _Thread:
    """Faust's consumer thread, as `_getmany` sees it: the fetch waits a little."""

    def __init__(self) -> None:
        self.asked: list[set[TP]] = []

    async def getmany(self, partitions: set[TP], timeout: float) -> dict[TP, list[object]]:
        await asyncio.sleep(0.01)
        self.asked.append(set(partitions))
        return {}


def test_a_fetch_keeps_asking_for_the_partitions_active_when_it_was_made() -> None:
    async def scenario() -> None:
        consumer = object.__new__(_WorkerConsumer)
        thread = consumer._thread = _Thread()  # type: ignore[assignment]
        active = {TP("changelog", 0)}
        fetch = asyncio.ensure_future(consumer._getmany(active, 1.0))
        await asyncio.sleep(0)
        active.clear()  # recovery pauses the last active partition while the fetch waits
        await asyncio.wait_for(fetch, 5)
        assert thread.asked == [{TP("changelog", 0)}]  # not empty, which means "every one"

    asyncio.run(scenario())
