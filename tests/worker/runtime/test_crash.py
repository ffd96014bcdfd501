"""A crashed worker poisons its states first and exits once its stop outlasts the deadline."""

from __future__ import annotations

import asyncio

import pytest

from streams.worker.runtime import crash


def test_the_states_are_poisoned_before_the_crash_and_a_stuck_stop_is_cut_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(crash, "STOP_DEADLINE", 0.0)  # due at the loop's next turn
    happened: list[object] = []
    error = RuntimeError("fenced")

    async def crash_app(reason: BaseException) -> None:
        happened.append(("crash", reason))

    async def scenario() -> None:
        await crash.crash_without_commit(
            lambda reason: happened.append(("poison", reason)),
            crash_app,
            error,
            lambda code: happened.append(("exit", code)),
        )
        assert happened == [("poison", error), ("crash", error)]  # nothing exits before it
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert happened[-1] == ("exit", crash.EXIT_CRASHED)


def test_a_stop_that_finishes_in_time_never_reaches_the_exit() -> None:
    exits: list[int] = []

    async def crash_app(reason: BaseException) -> None:
        return None

    async def scenario() -> None:
        await crash.crash_without_commit(lambda _: None, crash_app, RuntimeError(), exits.append)

    asyncio.run(scenario())  # the loop closes long before the deadline: the timer never runs
    assert exits == []
