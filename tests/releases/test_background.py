"""router/releases/background.py: release work off the loop, one low-priority thread."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from router.releases import background


async def test_runs_in_the_background_thread_and_returns_its_result() -> None:
    def where(x: int, *, y: int) -> tuple[str, int]:
        return threading.current_thread().name, x + y

    name, total = await background.run(where, 1, y=2)
    assert name.startswith(background.THREAD_NAME)
    assert name != threading.current_thread().name
    assert total == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux")
async def test_the_thread_runs_at_niceness_19_and_the_loop_does_not() -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert await background.run(niceness) == background.NICENESS
    # Only that thread: the event loop's thread keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


async def test_work_runs_one_at_a_time_in_submission_order() -> None:
    order: list[int] = []
    inside = 0
    most = 0

    def step(i: int) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        order.append(i)
        inside -= 1

    await asyncio.gather(*(background.run(step, i) for i in range(20)))
    assert order == list(range(20))
    assert most == 1


async def test_an_exception_reaches_the_caller_and_the_thread_keeps_working() -> None:
    def fail() -> None:
        raise ValueError("bad bytes")

    with pytest.raises(ValueError, match="bad bytes"):
        await background.run(fail)
    assert await background.run(lambda: 42) == 42
