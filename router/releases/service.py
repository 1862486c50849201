"""The release service of one router process: fingerprint, store, follow.

Two background tasks: the *check* fetches every system's library files each
`release_check_interval` (and on demand), stores a release the first time its digest is
seen and marks it active; the *sync* re-reads, each `resync_interval`, which release every
system serves (another instance or `token-router releases refresh` may have noticed an
upgrade first) and how long the cached releases live. What it learns goes to
`ReleaseFiles` (serving.py), which answers `/v/...`. Store or gateway failures are logged,
never fatal: what is cached keeps being served (fail-static).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from router.cancellation import stop_tasks
from router.config import Config
from router.errors import NotFound, ServiceUnavailable, StoreUnavailable
from router.proxy.upstream import Upstream
from router.releases import background
from router.releases.archive import ReleaseArchive
from router.releases.cache import prepare
from router.releases.compression import compress_all
from router.releases.fetch import Fetcher, FingerprintError
from router.releases.model import (
    Current,
    FileEntry,
    LibraryFile,
    RefreshResult,
    ReleaseMeta,
    choose_label,
    release_digest,
    release_id,
)
from router.releases.serving import ReleaseFiles
from router.releases.settings import DAY, check_release_config, release_dir
from router.releases.store import Activity, ReleaseStore, open_release_store
from router.state.keys import Keys
from router.state.sentinel import redis_target

log = logging.getLogger("router.releases")


def _with_forms(files: Sequence[LibraryFile]) -> list[LibraryFile]:
    """Compressed forms for the files that have none yet (see Releases._reuse), all computed
    by one compressor child (router/releases/compression.py)."""
    missing = [i for i, f in enumerate(files) if not f.forms]
    forms = compress_all([(files[i].body, files[i].content_type) for i in missing])
    out = list(files)
    for i, computed in zip(missing, forms, strict=True):
        out[i] = replace(files[i], forms=computed)
    return out


class Releases:
    def __init__(
        self, config: Config, store: ReleaseStore, upstreams: Mapping[str, Upstream]
    ) -> None:
        check_release_config(config)
        r = config.router
        self.config = config
        self.store = store
        self.fetcher = Fetcher(config, upstreams)
        self.paths = r.release_paths
        self.retention = r.release_retention_days * DAY
        self.check_interval = r.release_check_interval
        self.sync_interval = r.resync_interval
        # The durable archive (release_dir): None while releases are off.
        self.archive = ReleaseArchive(release_dir(config)) if self.paths else None
        self._archiving: set[str] = set()
        self.files = ReleaseFiles(store, r.release_cache_bytes, self.archive)
        self.current: dict[str, Current] = {}
        self.errors: dict[str, str] = {}  # last check error per system, "" when it worked
        self.last_check: float | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._recheck: asyncio.Task[None] | None = None
        self._recording: dict[str, asyncio.Lock] = {}
        self._closing = False

    @classmethod
    def create(cls, config: Config, keys: Keys, upstreams: Mapping[str, Upstream]) -> Releases:
        r = config.router
        store = open_release_store(redis_target(r), keys, timeout=r.redis_timeout)
        return cls(config, store, upstreams)

    # --- hand-out ------------------------------------------------------------------------

    def release_of(self, system: str) -> str | None:
        found = self.current.get(system)
        return None if found is None else found.release

    def label_of(self, system: str) -> str | None:
        found = self.current.get(system)
        return found.label or None if found is not None else None

    @property
    def store_error(self) -> str:
        """The last release store failure, "" while it works."""
        return self.files.store_error

    # --- lifetime ------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn from the store what each system serves, then check them in the background.

        Not waiting for the first check: after a restart the store already names every
        system's release, and on a first start ever the web app falls back to unversioned
        paths for the second the check takes; a slow gateway must not delay the listener.
        """
        if not self.paths:
            log.info("router.release_paths is empty: version-pinned libraries are off")
            return
        assert self.archive is not None  # releases are on
        await background.run(self.archive.open)
        pruned = await background.run(self.archive.prune, time.time())
        if pruned:
            log.info(
                "release archive %s: removed %d expired file(s)", self.archive.directory, pruned
            )
        # Whatever the archive holds and Redis lost (or never had) goes back first, so this
        # instance and every other one serve it from the store.
        try:
            await self.restore()
        except StoreUnavailable as exc:
            self.files.store_failed(exc)
        try:
            await self.sync(prewarm=True)
        except StoreUnavailable as exc:
            self.files.store_failed(exc)
        self._tasks.append(asyncio.create_task(self._check_loop(), name="release-check"))
        self._tasks.append(asyncio.create_task(self._sync_loop(), name="release-sync"))

    async def close(self) -> None:
        # A check being stopped can still start an archive or a prewarm on its way out (a
        # cancel that Python 3.11's wait_for swallows lets it run on): none starts once
        # closing, or it would be left pending, a Redis connection open, when the loop ends.
        self._closing = True
        await stop_tasks([*self._tasks, *self._background])
        await self.files.close()
        self._tasks.clear()
        await self.store.close()

    async def _check_loop(self) -> None:
        while True:
            # A bug in a check must end neither the checks nor the router.
            await self._refresh_quietly(self.config.system_ids)
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

    # --- following the store -------------------------------------------------------------

    async def sync(self, *, prewarm: bool = False) -> None:
        """Adopt the release each system serves per the store; refresh expiries and labels.

        Raises StoreUnavailable; the loop logs it and keeps the last known state.
        """
        now = time.time()
        shared = await self.store.system_releases(self.config.system_ids)
        for system, release in shared.items():
            mine = self.current.get(system)
            if release is None or (mine is not None and mine.release == release):
                continue
            meta = await self.files.meta(release, now)
            if meta is not None:
                self._adopt(system, meta, prewarm=prewarm)
                self._archive_soon(meta, None)
        known = sorted(set(self.files.metas) | self.files.cache.releases())
        serving = {cur.release for cur in self.current.values()}
        lost: list[str] = []
        for release, alive in (await self.store.liveness(known)).items():
            if (alive is None or alive[0] <= now) and release in serving:
                # Redis came back empty (or a system went unchecked for the whole retention):
                # keep serving what we hold and store it again from a fresh check now.
                lost += [s for s, cur in self.current.items() if cur.release == release]
                continue
            if alive is None or alive[0] <= now:
                self._forget(release)
                continue
            self.files.expires[release] = alive[0]
            meta = self.files.metas.get(release)
            if meta is not None and meta.label != alive[1]:
                self.files.metas[release] = replace(meta, label=alive[1])
                for system, cur in self.current.items():
                    if cur.release == release:
                        self.current[system] = Current(release, alive[1])
        if lost and (self._recheck is None or self._recheck.done()):
            recheck = self._in_background(self._refresh_quietly(lost))
            if recheck is not None:
                log.warning(
                    "release store lost the releases of %s; checking again", ", ".join(lost)
                )
                self._recheck = recheck
        self.files.store_ok()

    async def fingerprint_now(self, system: str) -> str:
        """Check one system now (the gates, before a switch): "" or why not."""
        return next((r.error for r in await self.refresh([system])), "") if self.paths else ""

    def check_soon(self, systems: Sequence[str]) -> None:
        """Check `systems` now, in the background, after any check under way: the active
        system (or a rollout's target) changed, from any source (CLI, API, page, rollout, a
        bare `SET`), and /router/current must name what it serves within seconds."""
        if self.paths and self._tasks and systems:
            self._in_background(self._refresh_quietly(list(systems)))

    async def _refresh_quietly(self, systems: Sequence[str]) -> None:
        try:
            await self.refresh(systems)
        except Exception:
            log.exception("release check failed unexpectedly")

    def _adopt(self, system: str, meta: ReleaseMeta, *, prewarm: bool) -> None:
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
            self._in_background(self._prewarm(meta))

    # --- the durable archive (archive.py) ------------------------------------------------

    def _archive_soon(self, meta: ReleaseMeta, files: Sequence[LibraryFile] | None) -> None:
        """Archive a release this instance serves, in the background (once at a time)."""
        if meta.id in self._archiving:
            return
        task = self._in_background(self._archive(meta, files))
        if task is not None:
            self._archiving.add(meta.id)
            task.add_done_callback(lambda _: self._archiving.discard(meta.id))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run `work` as a task that close() stops; not once closing (None then). Every
        task this service starts after start() goes through here."""
        if self._closing:
            work.close()
            return None
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

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
        now = time.time()
        restored = 0
        for release in await background.run(archive.releases, now):
            try:
                if await self.store.exists(release):
                    continue
            except StoreUnavailable as exc:
                self.files.store_failed(exc)
                return restored
            loaded = await background.run(archive.load, release, now)
            if loaded is None:
                continue
            meta, files = loaded
            await self.store.put(meta, files)
            restored += 1
            log.warning(
                "restored release %s (%s) from the archive", release, meta.label or "no label"
            )
        # A copy: a check may adopt a release for a system while this awaits Redis.
        for system, cur in list(self.current.items()):
            if await self.store.exists(cur.release):
                expires = max(self.files.expires.get(cur.release, 0.0), now + self.retention)
                await self.store.touch(Activity(cur.release, system, now, expires, cur.label))
        return restored

    def _forget(self, release: str) -> None:
        self._recording.pop(release, None)
        self.files.forget(release)

    async def _prewarm(self, meta: ReleaseMeta) -> None:
        """Load a current release's files, so even its first request is a cache hit."""
        for path in meta.files:
            if (meta.id, path) in self.files.cache:
                continue
            try:
                await self.files.load(meta.id, path)
            except (NotFound, ServiceUnavailable) as exc:
                log.debug("prewarm of %s%s stopped: %s", meta.id, path, exc)
                return

    # --- checking the systems ------------------------------------------------------------

    async def refresh(self, systems: Sequence[str] | None = None) -> list[RefreshResult]:
        """Fingerprint `systems` (default all) now, one after the other; concurrent calls run
        one after another too."""
        wanted = list(systems or self.config.system_ids)
        if not self.paths:
            return [RefreshResult(s, error="router.release_paths is empty") for s in wanted]
        async with self._lock:
            # One system after the other, for the loop's sake (see fetch.FETCH_CONCURRENCY).
            results = [await self._check(s) for s in wanted]
        self.last_check = time.time()
        return list(results)

    async def _check(self, system: str) -> RefreshResult:
        previous = self.current.get(system)
        before = None if previous is None else previous.release
        try:
            files = await self.fetcher.fetch_all(system, lambda path: self._held(before, path))
            reported = await self.fetcher.reported_version(system)
        except FingerprintError as exc:
            return self._check_failed(system, before, f"libraries not fetched: {exc}")
        # Hashing megabytes off the event loop, for the same reason as the reference scan.
        entries = await background.run(lambda: [f.entry() for f in files])
        rid = release_id(release_digest(entries))
        # Two systems may serve the very same bytes (A upgraded to B's version): one records
        # the release, the other then finds it stored instead of compressing it again.
        lock = self._recording.setdefault(rid, asyncio.Lock())
        try:
            async with lock:
                stored, meta = await self._record(system, rid, files, entries, reported)
        except StoreUnavailable as exc:
            self.files.store_failed(exc)
            return self._check_failed(system, before, f"release {rid} not stored: {exc}")
        self.files.store_ok()
        if self.errors.get(system):
            log.warning("release check of system %s works again", system)
        self.errors[system] = ""
        self._adopt(system, meta, prewarm=not stored)
        if stored:
            for f in files:
                self.files.cache.put(prepare(rid, meta.files[f.path], {"": f.body, **f.forms}))
        self._archive_soon(meta, files if stored else None)
        return RefreshResult(
            system, rid, meta.label, before, stored, len(meta.files), meta.size, ""
        )

    def _held(self, release: str | None, path: str) -> bytes | None:
        """The identity bytes of `path` in `release` if the hot cache holds them."""
        hot = None if release is None else self.files.cache.get(release, path)
        if hot is None:
            return None
        rep = hot.forms.get("")
        return None if rep is None else rep.body

    def _reuse(self, rid: str, fetched: LibraryFile) -> LibraryFile:
        """The bytes this process already holds for the file, if any.

        A release the store lost (Redis restarted empty) is stored again from the next check;
        its id is the digest of its contents, so the hot cache's forms are the same bytes:
        reusing them spares a second brotli pass (~14 MB of tables) and a second copy of every
        file while the first is still cached (peak RSS, SPEC section 3).
        """
        hot = self.files.cache.get(rid, fetched.path)
        if hot is None or "" not in hot.forms:
            return fetched
        forms = {enc: rep.body for enc, rep in hot.forms.items() if enc}
        return replace(fetched, body=hot.forms[""].body, forms=forms)

    def _check_failed(self, system: str, before: str | None, error: str) -> RefreshResult:
        if self.errors.get(system) != error:
            log.warning(
                "release check of system %s failed: %s; keeping release %s",
                system,
                error,
                before or "(none)",
            )
        self.errors[system] = error
        return RefreshResult(system, before, self.label_of(system) or "", before, error=error)

    async def _record(
        self,
        system: str,
        rid: str,
        files: list[LibraryFile],
        entries: list[FileEntry],
        reported: str | None,
    ) -> tuple[bool, ReleaseMeta]:
        """Store the release if new, mark it active; return (stored, meta as stored).
        `entries` are the files' entries as hashed for `rid` (before compression)."""
        now = time.time()
        expires = now + self.retention
        existing = await self.store.meta(rid)
        label = existing.label if existing is not None else ""
        if not label:
            others = {m.id: m.label for m in await self.store.list(now) if system in m.systems}
            configured = self.config.systems[system].version
            label = choose_label(configured, reported, rid, others)
        stored = False
        if existing is None:
            files[:] = [self._reuse(rid, f) for f in files]
            files[:] = await background.run(_with_forms, files)
            # The entries again, now naming the compressed forms; the digests are the ones
            # `rid` was made from (same paths, same bytes: _reuse keeps the content).
            digests = {e.path: e.sha256 for e in entries}
            stored_entries = [f.entry(digests[f.path]) for f in files]
            meta = ReleaseMeta(
                id=rid,
                digest=release_digest(stored_entries),
                label=label,
                files={e.path: e for e in stored_entries},
                created=now,
                last_active=now,
                last_system=system,
                systems=(system,),
                expires=expires,
            )
            await self.store.put(meta, files)
            stored = True
            log.info(
                "stored release %s of system %s (%s): %d files, %d bytes",
                rid,
                system,
                label or "no label",
                len(files),
                meta.size,
            )
        await self.store.touch(Activity(rid, system, now, expires, label))
        fresh = await self.store.meta(rid)
        if fresh is None:  # expired or flushed between the writes: next check stores it again
            raise StoreUnavailable(f"release {rid} vanished from the store while recorded")
        return stored, fresh

    # --- reporting -----------------------------------------------------------------------

    async def listing(self) -> tuple[list[ReleaseMeta], dict[str, str | None]]:
        """(releases in the store, system -> release it serves); raises StoreUnavailable."""
        now = time.time()
        return await self.store.list(now), await self.store.system_releases(self.config.system_ids)


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
        await releases.sync()
        return await releases.refresh(systems)
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
