"""Cancellation that holds, even when a lower layer swallows a cancel.

Python 3.11's `asyncio.wait_for` (which redis-py uses for every command) can swallow a
cancel that arrives just as its inner call completes. Two things here hold anyway:

- `stop_tasks` stops background tasks: it cancels, waits a bounded time, cancels again what
  is still running, and finally gives up with a log line rather than hang a shutdown.
- Ctrl-C for a long-running command (below): a fact its waiting loops look at, not only a
  cancel.

asyncio turns Ctrl-C into a cancel of the main task. Python 3.11's `asyncio.wait_for`, which
redis-py wraps around every command it sends, returns its result instead of raising when that
cancel lands in the one loop iteration between its inner call finishing and its caller
resuming (CPython gh-86296; 3.12 rebuilt `wait_for` on `asyncio.timeout`). A command that
polls (the upgrade's rollout watch, its drain) then carries on as if nothing was pressed: an
interrupted drain waits on, an interrupted rollout is watched to its promotion and exits 0.

`guard` installs a SIGINT handler that records the request *and* cancels the task; `check`
and `sleep` raise `CancelledError` once it is recorded, whether or not the cancel arrived,
so the step's own cleanup (the journal marked "stopped", how to resume) still runs. A second
Ctrl-C leaves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Iterable
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """`guard`'s main was ended by Ctrl-C (an Exception, not KeyboardInterrupt, so that it
    ends a task the way any error does rather than unwinding the event loop)."""

    def __init__(self) -> None:
        super().__init__("interrupted (Ctrl-C)")


class Interrupt:
    """One command's Ctrl-C: whether it was pressed, and an event its sleeps wake on."""

    def __init__(self) -> None:
        self.requested = False
        self.event = asyncio.Event()

    def request(self) -> None:
        self.requested = True
        self.event.set()


_current: ContextVar[Interrupt | None] = ContextVar("router_interrupt", default=None)


def requested() -> bool:
    interrupt = _current.get()
    return interrupt is not None and interrupt.requested


def check() -> None:
    """Raise `CancelledError` if Ctrl-C was pressed or the task was cancelled, even when a
    lower layer swallowed the cancel itself (the request stays counted on the task)."""
    task = asyncio.current_task()
    if requested() or (task is not None and task.cancelling()):
        raise asyncio.CancelledError


async def sleep(seconds: float) -> None:
    """`asyncio.sleep` that ends at once on Ctrl-C, raising `CancelledError`."""
    check()
    interrupt = _current.get()
    if interrupt is None:
        await asyncio.sleep(seconds)
    else:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await interrupt.event.wait()
    check()


async def guard(main: Awaitable[T], interrupt: Interrupt | None = None) -> T:
    """Await `main` in the current task with Ctrl-C recorded for `check` and `sleep`.

    Raises `Interrupted` when Ctrl-C ended it (the command line's exit 130). Where no
    SIGINT handler can be installed (not the main thread), `main` runs as it is. `interrupt`
    is for a caller that records a request itself (tests; a drill stopping its upgrade).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupt = interrupt or Interrupt()
    token = _current.set(interrupt)
    forced = False  # a second Ctrl-C came

    def on_sigint() -> None:
        nonlocal forced
        if interrupt.requested:
            forced = True
            raise KeyboardInterrupt  # the second Ctrl-C: leave now, cleanup or not
        interrupt.request()
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):
        installed = False
    try:
        return await main
    except asyncio.CancelledError:
        # After a second Ctrl-C the loop is being shut down around us: stay a plain cancel,
        # which the shutdown expects, rather than an error it would print a traceback for.
        if interrupt.requested and not forced:
            raise Interrupted from None
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
        _current.reset(token)


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
