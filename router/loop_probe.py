"""How long the event loop stalls: a timer that should fire every `interval` seconds.

A stall (a callback that holds the loop: a slow JSON dump, a synchronous compression, a big
GC pass) delays the next tick; the delay beyond the interval is the stall as every request
waiting meanwhile saw it. Ticks are a chain of `call_at` callbacks, not a task: about 2 µs of
CPU each, so the probe costs ~0.1% of a core at the default interval.

Only the loop's own work counts: a tick that is late because the kernel gave the CPU to
another process (a busy, shared machine) is not a stall of ours. So a stall is the lateness
(wall clock) capped by the CPU time this process used since the previous tick
(`process_time`, all threads: a worker thread holding the GIL stalls the loop too, and its
CPU time counts): a 30 ms callback is a 30 ms stall, 30 ms of being descheduled is none.

Resolution: uvloop's timers are in whole milliseconds, so a tick can be up to ~1 ms late with
an idle loop; only stalls over STALL_FLOOR are reported. The benchmark reads
`tokenrouter_loop_stall_seconds` before and after each section (bench/harness.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

INTERVAL = 0.002
# Below this, lateness is the timer's own millisecond granularity, not the loop being held.
STALL_FLOOR = 0.001


class LoopProbe:
    def __init__(self, on_stall: Callable[[float], None], interval: float = INTERVAL) -> None:
        self.on_stall = on_stall
        self.interval = interval
        self.max_stall = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        self._cpu = time.process_time()
        self._due = time.perf_counter() + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        late = min(time.perf_counter() - self._due, time.process_time() - self._cpu)
        if late > STALL_FLOOR:
            if late > self.max_stall:
                self.max_stall = late
            self.on_stall(late)
        self._schedule()
