"""The resources one router process shares between its proxy and admin listeners.

Both listeners are separate aiohttp applications (SPEC: admin never on the proxy port) that
need the same store, state holder, upstream pools and affinity cache, so those live here and
are started by the proxy app's cleanup context (wiring.py); the admin app only reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field

from router.cancellation import stop_tasks
from router.config import Config
from router.metrics import Metrics
from router.proxy.http1 import AnswerBudget
from router.proxy.upstream import Upstream
from router.releases.service import Releases
from router.state.affinity import Affinity
from router.state.recovery import check_persistence, write_back
from router.state.snapshot import StateHolder, StateWatcher
from router.state.store import StateStore
from router.switching.controller import RolloutController
from router.switching.fleet import InstanceRegistry
from router.switching.gates import Gates
from router.switching.watch_driver import PostSwitchWatch

log = logging.getLogger("router.runtime")


def instance_name() -> str:
    """host:pid plus a short random part: unique even for several routers in one process
    (tests) and across a PID reused after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


@dataclass
class Runtime:
    config: Config
    store: StateStore
    holder: StateHolder
    watcher: StateWatcher
    affinity: Affinity
    releases: Releases
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    instance: str = field(default_factory=instance_name)
    started_at: float = field(default_factory=time.time)
    persistence: str = ""  # how Redis persists its data (recovery.check_persistence)
    write_back_due: bool = False  # Redis lost its state and the write-back has not succeeded
    stopping: bool = False  # set on SIGTERM: /readyz turns 503 so balancers drain us first
    # The gates of a switch, their prober the process's one (the admin page's too).
    gates: Gates | None = None
    registry: InstanceRegistry | None = None
    controller: RolloutController | None = None
    watch: PostSwitchWatch | None = None
    # Gateway answer bytes this worker holds at once (router.answer_budget), over all pools:
    # made with the runtime, so the handler and the pools share this one object.
    answer_budget: AnswerBudget = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _write_back_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.answer_budget = AnswerBudget(self.config.router.answer_budget)

    async def start(self, first_sync_timeout: float = 5.0) -> None:
        """Open upstream pools, read the state once, then follow it in the background.

        If the store cannot be read at start, the router starts fail-static on the configured
        default system and says so: refusing to start would turn a Redis blip into an outage.
        """
        r = self.config.router
        for sid, system in self.config.systems.items():
            self.upstreams[sid] = Upstream(
                system,
                connect_timeout=r.connect_timeout,
                read_timeout=r.read_timeout,
                max_response_size=r.max_response_size,
                budget=self.answer_budget,
            )
        self.watcher.recovered.append(self._on_recovered)
        self.watcher.lost.append(self._on_lost)
        self._tasks.append(asyncio.create_task(self.watcher.run(), name="state-watcher"))
        deadline = time.monotonic() + first_sync_timeout
        while not self.holder.synced and not self.holder.degraded:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        if not self.holder.synced:
            log.error(
                "could not read the state store %s at start (%s); routing to the default "
                "system %r until it answers",
                self.store.description,
                self.holder.last_error or "no answer",
                self.holder.current.active,
            )
        if self.holder.synced:
            self.persistence = await check_persistence(self.store, self.persistence)
        await self.releases.start()
        if self.registry is not None:
            self._tasks.append(asyncio.create_task(self.registry.run(), name="heartbeat"))
        if self.controller is not None:
            self._tasks.append(asyncio.create_task(self.controller.run(), name="rollouts"))
        if self.watch is not None:
            self._tasks.append(asyncio.create_task(self.watch.run(), name="post-switch-watch"))

    def _on_recovered(self) -> None:
        self._tasks.append(asyncio.create_task(self._replay(), name="affinity-replay"))

    async def _replay(self) -> None:
        # The server that came back may be another one, configured differently.
        self.persistence = await check_persistence(self.store, self.persistence)
        if self.write_back_due:
            await self._write_back()
        else:
            await self.affinity.replay()

    def _on_lost(self) -> None:
        self.write_back_due = True
        self._tasks.append(asyncio.create_task(self._write_back(), name="write-back"))

    async def _write_back(self) -> None:
        # One at a time: the lost-state callback and the store's recovery may both ask.
        async with self._write_back_lock:
            if self.write_back_due and await write_back(self.affinity, self.releases.archiver):
                self.write_back_due = False

    async def close(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks.clear()
        if self.controller is not None:
            await self.controller.close()
        if self.registry is not None:
            await self.registry.close()
        if self.gates is not None:
            await self.gates.prober.close()
        await self.releases.close()
        for upstream in self.upstreams.values():
            await upstream.close()
        # Records of the last answers are written behind them: send them before closing.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.affinity.flush(), timeout=self.config.router.redis_timeout * 2
            )
        await self.store.close()
