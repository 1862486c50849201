"""Event-loop stalls of a router, from its own /metrics (router/server/loop_probe.py).

The router exports a histogram of stalls over 1 ms (`tokenrouter_loop_stall_seconds`) and
the longest since start. The harness reads it before and after a window and reports the
difference: how many stalls, and the bucket the longest one fell in.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from bench.stack import ADMIN_TOKEN, Router, get

HISTOGRAM = "tokenrouter_loop_stall_seconds"
MAX_GAUGE = "tokenrouter_loop_stall_max_seconds"
IDLE_WINDOW_S = 5.0


def stall_counts(router: Router) -> dict[str, float]:
    """Cumulative counts by bucket upper bound (seconds, as text; "+Inf"), plus "max"."""
    counts: dict[str, float] = {}
    for line in get(router.admin_url + "/metrics").decode().splitlines():
        if line.startswith(HISTOGRAM + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            counts[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(MAX_GAUGE + " "):
            counts["max"] = float(line.rsplit(" ", 1)[1])
    return counts


def stall_diff(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Stalls over 1 ms in the window and an upper bound of the longest (its bucket)."""
    bounds = sorted((k for k in after if k not in ("max", "+Inf")), key=float)
    total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    longest_at_most: float | None = None
    for le in bounds:
        if after[le] - before.get(le, 0.0) >= total:
            longest_at_most = float(le) * 1000
            break
    over = {
        f"over_{float(le) * 1000:g}ms": int(total - (after[le] - before.get(le, 0.0)))
        for le in bounds
    }
    return {
        "stalls_over_1ms": int(total),
        **over,
        "longest_at_most_ms": longest_at_most if total else 0.0,
        "longest_since_start_ms": round(after.get("max", 0.0) * 1000, 3),
    }


def idle_window(router: Router) -> dict[str, Any]:
    """Loop stalls of an idle router doing only background work: one release check of
    both systems (asked for through the admin API), then IDLE_WINDOW_S of nothing but
    state re-reads, health probes and timers. SPEC: none over 1 ms."""
    before = stall_counts(router)
    request = urllib.request.Request(
        router.admin_url + "/api/releases/refresh",
        method="POST",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 (loopback)
        resp.read()
    time.sleep(IDLE_WINDOW_S)
    return stall_diff(before, stall_counts(router))
