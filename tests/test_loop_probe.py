"""router/loop_probe.py: a stall of the event loop is seen and measured, idle jitter is not."""

from __future__ import annotations

import time

from router.loop_probe import STALL_FLOOR, LoopProbe
from router.metrics import Metrics
from tests.helpers import wait_until


async def test_a_blocked_loop_is_reported_as_one_stall() -> None:
    stalls: list[float] = []
    probe = LoopProbe(stalls.append)
    probe.start()
    try:
        await wait_until(lambda: probe._handle is not None)
        busy_until = time.process_time() + 0.03
        while time.process_time() < busy_until:  # the stall under test: 30 ms of CPU work
            pass
        await wait_until(lambda: bool(stalls))
    finally:
        probe.stop()
    assert any(0.02 <= s < 1.0 for s in stalls)
    assert probe.max_stall == max(stalls)
    assert all(s > STALL_FLOOR for s in stalls)


async def test_waiting_without_cpu_is_no_stall() -> None:
    """Descheduled (here: sleeping) is not the loop's own work: no stall is reported."""
    stalls: list[float] = []
    probe = LoopProbe(stalls.append)
    probe.start()
    try:
        await wait_until(lambda: probe._handle is not None)
        time.sleep(0.03)  # the thread holds no CPU meanwhile, like a preempted process
        ticks = probe._due
        await wait_until(lambda: probe._due > ticks)
    finally:
        probe.stop()
    assert not any(s >= 0.02 for s in stalls)


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
