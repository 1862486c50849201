"""The tasks the release parts start, stopped together."""

from __future__ import annotations

import asyncio

from router.releases.tasks import ReleaseTasks


async def test_tasks_refuse_work_once_closing() -> None:
    tasks = ReleaseTasks()
    started = asyncio.Event()

    async def runs() -> None:
        started.set()
        await asyncio.Event().wait()

    running = tasks.start(runs(), name="runs")
    assert running is not None and running.get_name() == "runs" and len(tasks) == 1
    await started.wait()
    await tasks.close()
    assert running.cancelled() and not tasks
    assert tasks.start(runs()) is None  # closed, never awaited, and no warning about it
