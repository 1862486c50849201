"""Is anything else using the CPUs? A benchmark on a shared 2-core machine must say so.

Machine-wide busy time comes from /proc/stat; the harness's own share is its `os.times()`
(itself plus every child it has waited for: wrk, the generator, stopped servers) plus, for
servers still running, their /proc/<pid>/stat times. The difference is CPU time used by
processes this run did not start ("foreign"), reported per row: a row measured while
something else ran is flagged in the results instead of passing for a clean figure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
QUIET_SHARE = 0.10  # at most 10% of the machine used by others while waiting to start
NOISY_SHARE = 0.05  # a row during which others used more than this is flagged


def machine_busy_s() -> float:
    """Seconds of CPU spent in user, nice, system, irq and softirq mode since boot, all CPUs.

    Interrupt time is included because loopback traffic is largely softirq work that the
    kernel charges to the per-process times of the processes involved; leaving it out made
    this run's own processes look bigger than the machine.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / TICK


def _proc_s(pid: int) -> float:
    """CPU seconds of `pid`, its reaped children and, recursively, its running children
    (the workers of `serve --workers 2`, nginx's worker), which no parent has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the command name (which may contain spaces): utime is the 14th field.
    rest = stat.rsplit(")", 1)[1].split()
    own = sum(int(x) for x in rest[11:15]) / TICK
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return own + sum(_proc_s(kid) for kid in kids)


def own_s(running: Iterable[int]) -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + sum(map(_proc_s, running))


@dataclass
class Window:
    wall: float
    busy: float
    own: float

    @classmethod
    def now(cls, running: Iterable[int]) -> Window:
        return cls(time.monotonic(), machine_busy_s(), own_s(running))

    def until(self, later: Window) -> dict[str, float]:
        wall = later.wall - self.wall
        foreign = max(0.0, (later.busy - self.busy) - (later.own - self.own))
        cpus = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 2),
            "foreign_cpu_s": round(foreign, 2),
            "foreign_share": round(foreign / (wall * cpus), 3) if wall > 0 else 0.0,
        }


def wait_quiet(max_wait: float, share: float = QUIET_SHARE) -> dict[str, float]:
    """Wait (bounded) until others use under `share` of the machine for one second."""
    cpus = os.cpu_count() or 1
    started = time.monotonic()
    busy_share = 1.0
    while True:
        before, own_before = machine_busy_s(), own_s(())
        time.sleep(1.0)
        used = machine_busy_s() - before - (own_s(()) - own_before)
        busy_share = used / cpus
        waited = time.monotonic() - started
        if busy_share < share or waited >= max_wait:
            return {"waited_s": round(waited, 1), "others_share_at_start": round(busy_share, 3)}
