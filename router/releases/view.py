"""The release each system serves, as this process knows it: what every surface reads.

The checker (checker.py) and the follower (follower.py) adopt releases here; the proxy hands
out `release_of` and `label_of`, the admin reads them and the store's listing. An adopted
release goes to `ReleaseFiles` (serving.py), which answers `/v/...`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from router.releases.model import Current, ReleaseMeta
from router.releases.serving import ReleaseFiles
from router.releases.store import ReleaseStore
from router.releases.tasks import ReleaseTasks

log = logging.getLogger("router.releases")


class ReleaseView:
    def __init__(
        self,
        store: ReleaseStore,
        system_ids: Sequence[str],
        files: ReleaseFiles,
        tasks: ReleaseTasks,
    ) -> None:
        self.store = store
        self.system_ids = tuple(system_ids)
        self.files = files
        self.tasks = tasks
        self.current: dict[str, Current] = {}

    def release_of(self, system: str) -> str | None:
        found = self.current.get(system)
        return None if found is None else found.release

    def label_of(self, system: str) -> str | None:
        found = self.current.get(system)
        return found.label or None if found is not None else None

    def serving(self) -> set[str]:
        """The releases some system serves."""
        return {cur.release for cur in self.current.values()}

    def systems_serving(self, release: str) -> list[str]:
        return [s for s, cur in self.current.items() if cur.release == release]

    def adopt(self, system: str, meta: ReleaseMeta, *, prewarm: bool) -> None:
        """`system` serves `meta` now; with `prewarm`, its files are loaded ahead, so even
        their first request is a cache hit."""
        before = self.current.get(system)
        self.current[system] = Current(meta.id, meta.label)
        self.files.adopt(meta)
        if before is not None and before.release != meta.id:
            log.warning(
                "system %s now serves release %s (%s); before: %s (%s)",
                system,
                meta.id,
                meta.label or "no label",
                before.release,
                before.label or "no label",
            )
        if prewarm and any((meta.id, p) not in self.files.cache for p in meta.files):
            self.tasks.start(self.files.prewarm(meta))

    def relabel(self, release: str, label: str) -> None:
        """The store names `release` `label` (another instance labelled it first)."""
        meta = self.files.metas.get(release)
        if meta is None or meta.label == label:
            return
        self.files.metas[release] = replace(meta, label=label)
        for system in self.systems_serving(release):
            self.current[system] = Current(release, label)

    async def listing(self) -> tuple[list[ReleaseMeta], dict[str, str | None]]:
        """(releases in the store, system -> release it serves); raises StoreUnavailable."""
        now = time.time()
        return await self.store.list(now), await self.store.system_releases(self.system_ids)
