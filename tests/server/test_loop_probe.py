"""router/server/loop_probe.py: a stall of the event loop is seen and measured, idle jitter is not.

Both clocks are tested: the kernel timer (timerfd, precise) and uvloop's millisecond timers
(the fallback where there is no timerfd)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from router.metrics import Metrics
from router.server.loop_probe import STALL_FLOOR, LoopProbe, periodic_timerfd
from tests.helpers import wait_until

CLOCKS = [pytest.param(True, id="timerfd"), pytest.param(False, id="timer")]


def burn(seconds: float) -> None:
    """Hold the loop with `seconds` of CPU work."""
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


@pytest.mark.parametrize("precise", CLOCKS)
async def test_a_blocked_loop_is_reported_as_one_stall(precise: bool) -> None:
    stalls: list[float] = []
    probe = LoopProbe(stalls.append, precise=precise)
    probe.start()
    try:
        assert probe.clock == ("timerfd" if precise else "timer")
        await wait_until(lambda: probe.ticks > 0)
        burn(0.03)  # the stall under test: 30 ms of CPU work
        await wait_until(lambda: bool(stalls))
    finally:
        probe.stop()
    # The tick due first after the stall began waited for (most of) it.
    assert any(0.02 <= s < 1.0 for s in stalls)
    assert probe.max_stall == max(stalls)
    assert all(s > STALL_FLOOR for s in stalls)


@pytest.mark.parametrize("precise", CLOCKS)
async def test_waiting_without_cpu_is_no_stall(precise: bool) -> None:
    """Descheduled (here: sleeping) is not the loop's own work: no stall is reported."""
    stalls: list[float] = []
    probe = LoopProbe(stalls.append, precise=precise)
    probe.start()
    try:
        await wait_until(lambda: probe.ticks > 0)
        time.sleep(0.03)  # the thread holds no CPU meanwhile, like a preempted process
        ticks = probe.ticks
        await wait_until(lambda: probe.ticks > ticks)
    finally:
        probe.stop()
    assert not any(s >= 0.02 for s in stalls)


def test_the_kernel_timer_is_a_fixed_grid() -> None:
    """What the precise clock rests on: expirations on start + k * interval, counted."""
    step = 1_000_000
    start = time.monotonic_ns() + step
    fd = periodic_timerfd(start, step)
    assert fd is not None  # Linux, where the router runs
    try:
        while time.monotonic_ns() < start + 10 * step:
            time.sleep(0.002)
        before = time.monotonic_ns()
        count = int.from_bytes(os.read(fd, 8), sys.byteorder)
        after = time.monotonic_ns()
    finally:
        os.close(fd)
    # Grid points at start, start + 1 ms, ...: all those passed when read, none ahead.
    assert (before - start) // step + 1 <= count <= (after - start) // step + 1


async def test_stop_releases_the_timer() -> None:
    probe = LoopProbe(lambda s: None)
    probe.start()
    await wait_until(lambda: probe.ticks > 2)
    probe.stop()
    ticks = probe.ticks
    await asyncio.sleep(0.02)  # ten intervals with the loop free to run ticks
    assert probe.ticks == ticks and probe._fd is None


async def test_stalls_reach_the_metrics() -> None:
    metrics = Metrics()
    metrics.on_loop_stall(0.003)
    metrics.on_loop_stall(0.02)
    metrics.on_loop_stall(0.004)
    assert metrics.registry.get_sample_value("tokenrouter_loop_stall_seconds_count") == 3
    assert (
        metrics.registry.get_sample_value("tokenrouter_loop_stall_seconds_bucket", {"le": "0.005"})
        == 2
    )
    assert metrics.registry.get_sample_value("tokenrouter_loop_stall_max_seconds") == 0.02
