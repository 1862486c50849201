"""The fleet: every router instance registers itself in Redis with a heartbeat.

One hash field per instance (`<prefix>:instances`), rewritten every `heartbeat_interval`
seconds and at once whenever the instance applies a new state: id, host, pid, version, start
time, and the state it applied (active system, generation, rollout share). Readers drop an
instance silent for 3 beats. A switch compares the generation it wrote with what each live
instance reports: that is the propagation confirmation (operations.confirm).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from router import __version__
from router.errors import StoreUnavailable
from router.state.snapshot import Snapshot, StateHolder
from router.state.store import StateStore

log = logging.getLogger("router.instances")

STALE_BEATS = 3  # an instance silent for this many heartbeats is not live any more


def applied_state(snapshot: Snapshot) -> dict[str, Any]:
    share = snapshot.rollout
    return {
        "active": snapshot.active,
        "generation": snapshot.generation,
        "offline": sorted(snapshot.offline),
        "rollout": None
        if share is None
        else {
            "target": share.target,
            "percent": round(share.fraction * 100),
            "id": share.rollout_id,
        },
        "refused": None if snapshot.refused is None else snapshot.refused.value,
    }


class InstanceRegistry:
    """This instance's heartbeat. Run `run()` in a task; `close()` deregisters."""

    def __init__(
        self,
        store: StateStore,
        holder: StateHolder,
        *,
        instance: str,
        started: float,
        interval: float,
        is_leader: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.holder = holder
        self.instance = instance
        self.started = started
        self.interval = interval
        self.is_leader = is_leader
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._wake = asyncio.Event()

    def on_snapshot(self, previous: Snapshot, current: Snapshot) -> None:
        """A state listener (wiring.py): a new state was applied, report it now, not at the
        next beat."""
        self._wake.set()

    def document(self) -> dict[str, Any]:
        return {
            "id": self.instance,
            "host": self.host,
            "pid": self.pid,
            "version": __version__,
            "started": self.started,
            "seen": time.time(),
            "synced": self.holder.synced,
            "degraded": self.holder.degraded,
            "leader": self.is_leader(),
            "applied": applied_state(self.holder.current),
        }

    async def beat(self) -> None:
        await self.store.heartbeat(self.instance, self.document())

    async def run(self) -> None:
        while True:
            self._wake.clear()
            if self.holder.synced:
                try:
                    await self.beat()
                    # Reading prunes: a crashed instance leaves Redis after 3 missed beats
                    # even when nobody looks at the fleet.
                    await self.store.instances(time.time(), self.interval * STALE_BEATS)
                except StoreUnavailable as exc:
                    log.debug("heartbeat not written: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def close(self) -> None:
        """Leave the fleet at once on a clean stop (a crash is dropped after 3 beats)."""
        with contextlib.suppress(StoreUnavailable, TimeoutError):
            await asyncio.wait_for(self.store.remove_instance(self.instance), 1.0)
