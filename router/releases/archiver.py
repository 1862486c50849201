"""Keeping the releases this instance serves in its durable archive (archive.py), and putting
them back into a store that lost them (Redis restarted empty, or never had them).

Every release a system is seen serving is archived once, in the background; at start and
in the write-back after lost state (state/recovery.py) whatever the archive holds and the
store lacks is stored again, so this instance and every other one serve it from the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from router.errors import StoreUnavailable
from router.releases import background
from router.releases.archive import ReleaseArchive
from router.releases.model import LibraryFile, ReleaseMeta
from router.releases.store import Activity, ReleaseStore
from router.releases.tasks import ReleaseTasks
from router.releases.view import ReleaseView

log = logging.getLogger("router.releases")


class Archiver:
    def __init__(
        self,
        archive: ReleaseArchive | None,
        store: ReleaseStore,
        view: ReleaseView,
        tasks: ReleaseTasks,
        *,
        retention: float,
    ) -> None:
        # None while releases are off (no release_paths).
        self.archive = archive
        self.store = store
        self.view = view
        self.tasks = tasks
        self.retention = retention
        self._archiving: set[str] = set()

    async def open(self) -> None:
        """Make the archive's directory and drop what expired (at start)."""
        archive = self.archive
        if archive is None:
            return
        await background.run(archive.open)
        pruned = await background.run(archive.prune, time.time())
        if pruned:
            log.info("release archive %s: removed %d expired file(s)", archive.directory, pruned)

    def archive_soon(self, meta: ReleaseMeta, files: Sequence[LibraryFile] | None) -> None:
        """Archive a release this instance serves, in the background (once at a time).
        Without `files`, their bytes come from the store (another instance stored them)."""
        if meta.id in self._archiving:
            return
        task = self.tasks.start(self._archive(meta, files))
        if task is not None:
            self._archiving.add(meta.id)
            task.add_done_callback(lambda _: self._archiving.discard(meta.id))

    async def _archive(self, meta: ReleaseMeta, files: Sequence[LibraryFile] | None) -> None:
        archive = self.archive
        if archive is None:
            return
        try:
            if await background.run(archive.has, meta.id):
                await background.run(
                    archive.touch, meta.id, meta.expires, meta.last_active, meta.last_system
                )
                return
            forms: dict[str, dict[str, bytes]] = {}
            if files is not None:
                forms = {f.path: {"": f.body, **f.forms} for f in files}
            else:
                # Stored by another instance: the bytes (all encodings) come from the store.
                for path in meta.files:
                    forms[path] = await self.store.file(meta.id, path)
            await background.run(archive.save, meta, forms)
            log.info("archived release %s in %s", meta.id, archive.directory)
        except StoreUnavailable as exc:
            log.warning("release %s not archived yet: %s", meta.id, exc)
        except (OSError, ValueError) as exc:
            log.error("release %s not archived in %s: %s", meta.id, archive.directory, exc)

    async def restore(self) -> int:
        """Put every unexpired archived release that the store lacks back into it, and name
        again the release each system serves. Returns how many releases were stored."""
        archive = self.archive
        if archive is None:
            return 0
        files = self.view.files
        now = time.time()
        restored = 0
        for release in await background.run(archive.releases, now):
            try:
                if await self.store.exists(release):
                    continue
            except StoreUnavailable as exc:
                files.store_failed(exc)
                return restored
            loaded = await background.run(archive.load, release, now)
            if loaded is None:
                continue
            meta, library = loaded
            await self.store.put(meta, library)
            restored += 1
            log.warning(
                "restored release %s (%s) from the archive", release, meta.label or "no label"
            )
        # A copy: a check may adopt a release for a system while this awaits Redis.
        for system, cur in list(self.view.current.items()):
            if await self.store.exists(cur.release):
                expires = max(files.expires.get(cur.release, 0.0), now + self.retention)
                await self.store.touch(Activity(cur.release, system, now, expires, cur.label))
        return restored
