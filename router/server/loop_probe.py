"""How long the event loop stalls: a tick that should run every `interval` seconds.

A stall (a callback that holds the loop: a slow JSON dump, a synchronous compression, a big
GC pass, several tasks' steps in one loop turn) delays the next tick; the delay is the stall
as every request arriving meanwhile saw it.

The ticks come from a kernel timer (Linux `timerfd`, CLOCK_MONOTONIC) that the loop watches
like a socket: the kernel marks it readable on a fixed grid (start + k * interval) with
microsecond precision, whatever the loop is doing, and the probe knows which grid point it
is late for (the first one not yet read), so a tick's lateness is exactly how long an event
arriving at that moment waited for the loop. uvloop's own timers are in whole milliseconds
(a tick can be ~1 ms late with a near-idle loop), too coarse to tell a 1 ms stall from
timer slop; they are the fallback where timerfd is missing (not Linux).

Only the loop's own work counts: a tick that is late because the kernel gave the CPU to
another process (a busy, shared machine) is not a stall of ours. So a stall is the lateness
(wall clock) capped by the CPU time this process used since the previous tick
(`process_time`, all threads: a worker thread holding the GIL stalls the loop too, and its
CPU time counts): a 30 ms callback is a 30 ms stall, 30 ms of being descheduled is none.
Only stalls over STALL_FLOOR are reported. Each tick costs a few µs of CPU; the benchmark
reads `tokenrouter_loop_stall_seconds` before and after each section (bench/harness.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
from collections.abc import Callable

INTERVAL = 0.002
# Stalls up to this are not reported (SPEC: none over 1 ms from background work).
STALL_FLOOR = 0.001

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timespec(ns: int) -> _Timespec:
    return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)


def periodic_timerfd(first_ns: int, interval_ns: int) -> int | None:
    """A non-blocking timerfd that expires at `first_ns` (CLOCK_MONOTONIC, as
    time.monotonic_ns) and every `interval_ns` after; None where there is none."""
    if sys.platform != "linux":
        return None
    # Through libc: os.timerfd_create only came with Python 3.13.
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    fd = int(create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
    if fd < 0:
        return None
    spec = _Itimerspec(_timespec(interval_ns), _timespec(first_ns))
    if settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
        os.close(fd)
        return None
    return fd


class LoopProbe:
    def __init__(
        self,
        on_stall: Callable[[float], None],
        interval: float = INTERVAL,
        *,
        precise: bool = True,
    ) -> None:
        self.on_stall = on_stall
        self.interval = interval
        self.max_stall = 0.0
        self.ticks = 0
        # "timerfd" (precise), "timer" (uvloop's millisecond timers) or "" before start().
        self.clock = ""
        self._precise = precise
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._start_ns = 0
        self._interval_ns = round(interval * 1e9)
        self._expirations = 0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._cpu = time.process_time()
        if self._precise:
            self._start_ns = time.monotonic_ns() + self._interval_ns
            self._fd = periodic_timerfd(self._start_ns, self._interval_ns)
        if self._fd is not None:
            self.clock = "timerfd"
            self._loop.add_reader(self._fd, self._expired)
        else:
            self.clock = "timer"
            self._schedule()

    def stop(self) -> None:
        if self._fd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # --- timerfd: the kernel's grid --------------------------------------------------------

    def _expired(self) -> None:
        assert self._fd is not None
        try:
            count = int.from_bytes(os.read(self._fd, 8), sys.byteorder)
        except BlockingIOError:
            return
        # Late for the first grid point not read before: the fd became readable then.
        due = self._start_ns + self._expirations * self._interval_ns
        self._expirations += count
        self._observe((time.monotonic_ns() - due) / 1e9)

    # --- fallback: uvloop's millisecond timers ---------------------------------------------

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = time.perf_counter() + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._observe(time.perf_counter() - self._due)
        self._schedule()

    def _observe(self, late: float) -> None:
        cpu = time.process_time()
        late = min(late, cpu - self._cpu)
        self._cpu = cpu
        self.ticks += 1
        if late > STALL_FLOOR:
            if late > self.max_stall:
                self.max_stall = late
            self.on_stall(late)
