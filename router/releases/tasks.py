"""The tasks the release parts start after start(), stopped together by close().

A check being stopped can still start an archive or a prewarm on its way out (a cancel that
Python 3.11's wait_for swallows lets it run on, router/cancellation.py): none starts once
closing, or it would be left pending, a Redis connection open, when the loop ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from router.cancellation import stop_tasks


class ReleaseTasks:
    def __init__(self) -> None:
        self.closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self, work: Coroutine[Any, Any, None], name: str | None = None
    ) -> asyncio.Task[None] | None:
        """Run `work` as a task that close() stops; not once closing (None then). Every
        task the release parts start goes through here."""
        if self.closing:
            work.close()
            return None
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        self.closing = True
        await stop_tasks(list(self._tasks))
