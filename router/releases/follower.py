"""Keeping the release each system serves current: the two background loops of a router.

The *check* loop fingerprints every system each `release_check_interval` (checker.py); a
change of the active system (or a rollout's target), from any source, checks it at once
(`check_soon`). The *sync* loop re-reads, each `resync_interval`, which release every
system serves per the store (another instance or `token-router releases refresh` may have
noticed an upgrade first) and how long the releases held here live. Store or gateway
failures are logged, never fatal: what is cached keeps being served (fail-static).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from router.config import Config
from router.errors import StoreUnavailable
from router.releases.archiver import Archiver
from router.releases.checker import ReleaseChecker
from router.releases.store import ReleaseStore
from router.releases.tasks import ReleaseTasks
from router.releases.view import ReleaseView

log = logging.getLogger("router.releases")


@dataclass(frozen=True, slots=True)
class Fates:
    """What the store's liveness means for the releases this process holds."""

    lost: list[str] = field(default_factory=list)  # served here, gone from the store
    gone: list[str] = field(default_factory=list)  # expired and served by no system: forgotten
    alive: dict[str, tuple[float, str]] = field(default_factory=dict)  # -> (expires, label)


def fates(liveness: Mapping[str, tuple[float, str] | None], serving: set[str], now: float) -> Fates:
    """Judge each release the store was asked about (`liveness`: release -> (expiry, label),
    None once expired), in its order. A release a system serves is never forgotten: Redis
    came back empty (or a system went unchecked for the whole retention), so this process
    keeps serving what it holds and stores it again from a fresh check."""
    out = Fates()
    for release, alive in liveness.items():
        if alive is None or alive[0] <= now:
            (out.lost if release in serving else out.gone).append(release)
        else:
            out.alive[release] = alive
    return out


class ReleaseFollower:
    def __init__(
        self,
        config: Config,
        store: ReleaseStore,
        view: ReleaseView,
        checker: ReleaseChecker,
        archiver: Archiver,
        tasks: ReleaseTasks,
    ) -> None:
        r = config.router
        self.system_ids = config.system_ids
        self.store = store
        self.view = view
        self.files = view.files
        self.checker = checker
        self.archiver = archiver
        self.tasks = tasks
        self.paths = r.release_paths
        self.check_interval = r.release_check_interval
        self.sync_interval = r.resync_interval
        self.running = False
        self._recheck: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the check and sync loops until the tasks are closed."""
        self.running = True
        self.tasks.start(self._check_loop(), name="release-check")
        self.tasks.start(self._sync_loop(), name="release-sync")

    def check_soon(self, systems: Sequence[str]) -> None:
        """Check `systems` now, in the background, after any check under way: the active
        system (or a rollout's target) changed, from any source (CLI, API, page, rollout, a
        bare `SET`), and /router/current must name what it serves within seconds."""
        if self.paths and self.running and systems:
            self.tasks.start(self.checker.refresh_quietly(list(systems)))

    async def _check_loop(self) -> None:
        while True:
            await self.checker.refresh_quietly(self.system_ids)
            await asyncio.sleep(self.check_interval)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            try:
                await self.sync(prewarm=True)
            except StoreUnavailable as exc:
                self.files.store_failed(exc)
            except Exception:
                log.exception("release sync failed unexpectedly")

    async def sync(self, *, prewarm: bool = False) -> None:
        """Adopt the release each system serves per the store; refresh expiries and labels.

        Raises StoreUnavailable; the loop logs it and keeps the last known state.
        """
        now = time.time()
        shared = await self.store.system_releases(self.system_ids)
        for system, release in shared.items():
            if release is None or self.view.release_of(system) == release:
                continue
            meta = await self.files.meta(release, now)
            if meta is not None:
                self.view.adopt(system, meta, prewarm=prewarm)
                self.archiver.archive_soon(meta, None)
        known = sorted(set(self.files.metas) | self.files.cache.releases())
        judged = fates(await self.store.liveness(known), self.view.serving(), now)
        for release in judged.gone:
            self.checker.forget(release)
            self.files.forget(release)
        for release, (expires, label) in judged.alive.items():
            self.files.expires[release] = expires
            self.view.relabel(release, label)
        lost = [s for release in judged.lost for s in self.view.systems_serving(release)]
        if lost and (self._recheck is None or self._recheck.done()):
            recheck = self.tasks.start(self.checker.refresh_quietly(lost))
            if recheck is not None:
                log.warning(
                    "release store lost the releases of %s; checking again", ", ".join(lost)
                )
                self._recheck = recheck
        self.files.store_ok()
