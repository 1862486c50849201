"""Stopping background tasks reliably.

Python 3.11's `asyncio.wait_for` (which redis-py uses for every command) can swallow a
cancel that arrives just as its inner call completes; an endless loop around such a call
then never ends and a shutdown waiting for it hangs. `stop_tasks` cancels, waits a bounded
time, cancels again what is still running, and finally gives up with a log line rather than
hang the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("router.tasks")


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + timeout
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            names = ", ".join(sorted(t.get_name() for t in pending))
            log.warning("background task(s) did not stop in %.0f s: %s", timeout, names)
            return
        _, pending = await asyncio.wait(pending, timeout=min(0.2, left))
