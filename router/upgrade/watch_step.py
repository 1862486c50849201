"""Step 4 of `token-router upgrade`: follow the routers' post-switch watch of the switch.

The routers watch every change of the active system (switching/watch_driver.py); the upgrade
only follows the watch of its own switch, prints what it measures and the time left, and
goes on once it passed. So the old system is never drained away and marked offline
(`--offline-old`) while the new one could still be undone. `judge` is the pure decision
over the watch document; `follow` does the reading and printing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from router import cancellation
from router.config import Config
from router.state import watch as watching
from router.state.store import StateStore
from router.switching.watch_driver import thresholds

# How long a switch may go without its watch appearing: a few leader ticks, a leader's
# lock changing hands, on a busy machine.
START_BOUND = 30.0
PRINT_EVERY = 10.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the watch ended for the upgrade: "passed", "off", "missing" (no watch started),
    "undone" (exit 4), "alarm" or "ended" (someone else changed the active system)."""

    kind: str
    message: str


def ours(w: watching.Watch | None, target: str, old: str, since: float) -> bool:
    """Whether `w` watches this upgrade's switch old -> target (made at `since` or later)."""
    return w is not None and w.system == target and w.previous == old and w.started >= since


def judge(w: watching.Watch, now: float) -> Outcome | None:
    """None while the watch runs; else how it ended, in words for the operator."""
    line = watching.line(w, now, watching.LATENCY_BUCKETS)
    if w.watching:
        return None
    if w.state == watching.PASSED:
        return Outcome("passed", line)
    if w.state == watching.UNDONE:
        return Outcome(
            "undone",
            f"the post-switch watch undid {w.previous} -> {w.system}: {w.reason}",
        )
    if w.state == watching.ALARM:
        return Outcome("alarm", line)
    return Outcome("ended", f"the watch of {w.system} ended: {w.reason}")


async def follow(
    store: StateStore,
    config: Config,
    *,
    target: str,
    old: str,
    since: float,
    out: Callable[[str], None],
    read: Callable[[Callable[[], Awaitable[str | None]]], Awaitable[str | None]],
) -> Outcome:
    """Until the watch of the switch old -> target ends; `read` retries while Redis is away."""
    window = config.router.post_switch_watch
    if window <= 0:
        return Outcome("off", "the post-switch watch is off (router.post_switch_watch = 0)")
    defaults = thresholds(config.router)
    began = time.monotonic()
    shown, last_print = "", 0.0
    told_measures = False
    while True:
        w = watching.loads(await read(store.read_watch), defaults)
        now = time.time()
        if not ours(w, target, old, since):
            if time.monotonic() - began > START_BOUND:
                return Outcome(
                    "missing",
                    f"no post-switch watch of {old} -> {target} started within "
                    f"{START_BOUND:g} s (are the routers older than this build, or is none "
                    "leading?)",
                )
            await cancellation.sleep(0.25)
            continue
        assert w is not None
        if not told_measures:
            out(f"  the routers watch {target} for {window:g} s: {watching.measures(w)}")
            told_measures = True
        ended = judge(w, now)
        if ended is not None:
            return ended
        # The figures once they come, then every 10 s, with the time left.
        if (w.checked and not shown) or time.monotonic() - last_print >= PRINT_EVERY:
            out(f"  {watching.line(w, now, watching.LATENCY_BUCKETS)}")
            shown, last_print = "figures" if w.checked else "", time.monotonic()
        await cancellation.sleep(0.25)
