"""A worker whose seek to committed offsets takes two seconds longer.

Faust's recovery resumes fetching before it seeks, and drops what it fetches meanwhile; the
delay makes that window wide enough for a test to hit it every time.
Run as `python -m tests.worker.slow_seek_worker [worker options]`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streams.worker.__main__ import main

_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed


async def _slow_seek_to_committed(self: AIOKafkaConsumerThread) -> Mapping[TP, int]:
    await asyncio.sleep(2)
    return await _seek_to_committed(self)


if __name__ == "__main__":
    AIOKafkaConsumerThread.seek_to_committed = _slow_seek_to_committed  # type: ignore[method-assign]
    sys.exit(main())
