"""The release parts of one router process, made, started and closed together.

`ReleaseFiles` (serving.py) answers `/v/...`; the `ReleaseView` (view.py) knows the release
each system serves; the `Archiver` (archiver.py) keeps them on disk and puts them back into
a store that lost them; the `ReleaseChecker` (checker.py) fingerprints a system's libraries
and records them; the `ReleaseFollower` (follower.py) keeps all of it current in the
background. Callers take the part they use (server/wiring.py hands them out).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from router.config import Config
from router.errors import StoreUnavailable
from router.proxy.upstream import Upstream
from router.releases.archive import ReleaseArchive
from router.releases.archiver import Archiver
from router.releases.checker import ReleaseChecker
from router.releases.fetch import Fetcher
from router.releases.follower import ReleaseFollower
from router.releases.model import RefreshResult
from router.releases.serving import ReleaseFiles
from router.releases.settings import DAY, check_release_config, release_dir
from router.releases.store import ReleaseStore, open_release_store
from router.releases.tasks import ReleaseTasks
from router.releases.view import ReleaseView
from router.state.keys import Keys
from router.state.sentinel import redis_target

log = logging.getLogger("router.releases")


class Releases:
    def __init__(
        self, config: Config, store: ReleaseStore, upstreams: Mapping[str, Upstream]
    ) -> None:
        check_release_config(config)
        r = config.router
        self.store = store
        self.on = bool(r.release_paths)
        # The durable archive (release_dir): None while releases are off.
        archive = ReleaseArchive(release_dir(config)) if self.on else None
        self.tasks = ReleaseTasks()
        self.files = ReleaseFiles(store, r.release_cache_bytes, archive)
        self.view = ReleaseView(store, config.system_ids, self.files, self.tasks)
        retention = r.release_retention_days * DAY
        self.archiver = Archiver(archive, store, self.view, self.tasks, retention=retention)
        fetcher = Fetcher(config, upstreams)
        self.checker = ReleaseChecker(config, store, fetcher, self.view, self.archiver)
        self.follower = ReleaseFollower(
            config, store, self.view, self.checker, self.archiver, self.tasks
        )

    @classmethod
    def create(cls, config: Config, keys: Keys, upstreams: Mapping[str, Upstream]) -> Releases:
        r = config.router
        store = open_release_store(redis_target(r), keys, timeout=r.redis_timeout)
        return cls(config, store, upstreams)

    async def start(self) -> None:
        """Learn from the store what each system serves, then check them in the background.

        Not waiting for the first check: after a restart the store already names every
        system's release, and on a first start ever the web app falls back to unversioned
        paths for the second the check takes; a slow gateway must not delay the listener.
        """
        if not self.on:
            log.info("router.release_paths is empty: version-pinned libraries are off")
            return
        await self.archiver.open()
        # Whatever the archive holds and Redis lost (or never had) goes back first, so this
        # instance and every other one serve it from the store.
        try:
            await self.archiver.restore()
        except StoreUnavailable as exc:
            self.files.store_failed(exc)
        try:
            await self.follower.sync(prewarm=True)
        except StoreUnavailable as exc:
            self.files.store_failed(exc)
        self.follower.start()

    async def close(self) -> None:
        await self.tasks.close()
        await self.files.close()
        await self.store.close()


async def refresh_once(config: Config, systems: Sequence[str] | None = None) -> list[RefreshResult]:
    """`token-router releases refresh`: one check from this process, written to the store,
    where every running router picks it up within its resync_interval."""
    r = config.router
    upstreams = {
        sid: Upstream(s, connect_timeout=r.connect_timeout, read_timeout=r.read_timeout)
        for sid, s in config.systems.items()
    }
    releases = Releases.create(config, Keys(r.key_prefix), upstreams)
    try:
        await releases.follower.sync()
        return await releases.checker.refresh(systems)
    finally:
        await releases.close()
        for upstream in upstreams.values():
            await upstream.close()


async def fingerprint_now(config: Config, system: str) -> str:
    """`refresh_once` of one system for a CLI process's gates: "" or why not (or nothing)."""
    r = config.router
    if not r.release_paths or r.redis_url.startswith("memory://"):
        return ""
    return next((x.error for x in await refresh_once(config, [system])), "no answer")
