"""Background work off the event loop: one low-priority thread per process.

A release check scans, hashes, compresses and archives megabytes of library files. In the
default executor that work competed with the event loop twice over:

- for the CPU: a worker is pinned to one core in production and in the benchmark, so a
  thread compressing with the GIL released still holds the only core, and the loop, woken
  by a timer or a request, waits for the scheduler to preempt it (measured: 1-3 ms stalls
  during an idle release check, router/server/loop_probe.py);
- for the GIL: two default-executor threads scanning two systems' scripts at once hand the
  GIL to each other between windows as often as to the loop.

So background work runs in a single thread at niceness 19: the kernel runs the loop's
thread the moment it wakes (a nice-19 thread's slice is tiny against a nice-0 one), the
thread still progresses whenever the loop idles (unlike SCHED_IDLE, it is not starved by a
busy loop), and one thread means the loop is the only other GIL waiter. Per-thread nice is
Linux (`setpriority` on a thread id); elsewhere the thread keeps the process's priority.

Not for work a request waits on (serving.py's archive reads): at niceness 19 it would wait
behind every request the loop has to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

NICENESS = 19
THREAD_NAME = "background"

_executor: ThreadPoolExecutor | None = None
_pid = 0


def _lower_priority() -> None:
    """Runs in the thread: niceness 19 for this thread only (Linux thread ids)."""
    # Raising one's own niceness needs no privilege; where per-thread priority does not
    # exist (or a sandbox forbids it) the work still runs, only at the normal priority.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


def executor() -> ThreadPoolExecutor:
    """The process's background executor, created on first use (after any fork)."""
    global _executor, _pid
    if _executor is None or _pid != os.getpid():
        _executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=THREAD_NAME, initializer=_lower_priority
        )
        _pid = os.getpid()
    return _executor


async def run(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`asyncio.to_thread` for background work: in the low-priority thread, in order."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(), functools.partial(func, *args, **kwargs))
