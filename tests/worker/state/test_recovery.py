"""The changelog queue keeps what it holds when the flow resumes (`ChangelogQueue`)."""

from __future__ import annotations

import asyncio

from mode.utils.queues import FlowControlEvent

from streams.worker.state.recovery import ChangelogQueue


def test_a_resume_keeps_the_queued_changelog_messages_and_a_suspension_drops_them() -> None:
    async def scenario() -> None:
        flow = FlowControlEvent(initially_suspended=False)
        queue = ChangelogQueue(flow_control=flow, clear_on_resume=True)
        for offset in range(3):
            queue.put_nowait(offset)
        flow.resume()  # as at the end of every recovery, with standbys already reading
        assert [queue.get_nowait() for _ in range(2)] == [0, 1]
        flow.suspend()  # a rebalance: recovery seeks back to what it applied
        flow.clear()
        assert queue.empty()

    asyncio.run(scenario())
