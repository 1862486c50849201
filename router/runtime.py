"""The resources one router process shares between its proxy and admin listeners.

Both listeners are separate aiohttp applications (SPEC: admin never on the proxy port) that
need the same store, state holder, upstream pools and affinity cache, so those live here and
are started by the proxy app's cleanup context (app.py); the admin app only reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from router.affinity import Affinity
from router.config import Config
from router.keys import Keys
from router.metrics import Metrics
from router.releases.service import Releases
from router.state import Snapshot, StateHolder, StateWatcher
from router.store import StateStore, open_store
from router.tasks import stop_tasks
from router.upstream import Upstream

log = logging.getLogger("router.runtime")


def _count_change(metrics: Metrics, old: Snapshot, new: Snapshot) -> None:
    if new.active != old.active:
        metrics.on_switch()
    if new.refused is not None and new.refused != old.refused:
        metrics.on_refusal()


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
    stopping: bool = False  # set on SIGTERM: /readyz turns 503 so balancers drain us first
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def create(cls, config: Config, store: StateStore | None = None) -> Runtime:
        r = config.router
        keys = Keys(r.key_prefix)
        if store is None:
            store = open_store(
                r.redis_url, keys, timeout=r.redis_timeout, keyspace_events=r.keyspace_events
            )
        holder = StateHolder(current=Snapshot(active=config.default_system))
        instance = instance_name()
        watcher = StateWatcher(
            store,
            holder,
            config.system_ids,
            instance=instance,
            resync_interval=r.resync_interval,
            retry_max=r.redis_retry_max,
        )
        affinity = Affinity(store, holder, cache_size=r.affinity_cache_size, ttl=r.affinity_ttl)
        # Filled in start(); the release service fetches libraries through the same pools.
        upstreams: dict[str, Upstream] = {}
        releases = Releases.create(config, keys, upstreams)
        metrics = Metrics()
        releases.files.on_lookup = metrics.on_release_lookup
        holder.add_listener(lambda old, new: _count_change(metrics, old, new))
        return cls(
            config,
            store,
            holder,
            watcher,
            affinity,
            releases,
            upstreams,
            metrics=metrics,
            instance=instance,
        )

    async def start(self, first_sync_timeout: float = 5.0) -> None:
        """Open upstream pools, read the state once, then follow it in the background.

        If the store cannot be read at start, the router starts fail-static on the configured
        default system and says so: refusing to start would turn a Redis blip into an outage.
        """
        r = self.config.router
        for sid, system in self.config.systems.items():
            self.upstreams[sid] = Upstream(
                system, connect_timeout=r.connect_timeout, read_timeout=r.read_timeout
            )
        self.watcher.recovered.append(self._on_recovered)
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
        await self.releases.start()

    def _on_recovered(self) -> None:
        self._tasks.append(asyncio.create_task(self._replay(), name="affinity-replay"))

    async def _replay(self) -> None:
        await self.affinity.replay()

    async def close(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks.clear()
        await self.releases.close()
        for upstream in self.upstreams.values():
            await upstream.close()
        # Records of the last answers are written behind them: send them before closing.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.affinity.flush(), timeout=self.config.router.redis_timeout * 2
            )
        await self.store.close()
