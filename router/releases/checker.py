"""Checking a system: fingerprint the library files its gateway serves, store the release
the first time its digest is seen, and mark it active.

A check fetches every configured library path (fetch.py), hashes the bytes into a release
id (model.py), records the release in the shared store (compressed once, by one child) and
adopts it in the view; the archiver keeps a copy. A failure keeps the release the system was
known to serve and is remembered per system ("" once a check works again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from router.config import Config
from router.errors import StoreUnavailable
from router.releases import background
from router.releases.archiver import Archiver
from router.releases.cache import HotFile, prepare
from router.releases.compression import compress_all
from router.releases.fetch import Fetcher, FingerprintError
from router.releases.model import (
    FileEntry,
    LibraryFile,
    RefreshResult,
    ReleaseMeta,
    choose_label,
    release_digest,
    release_id,
)
from router.releases.settings import DAY
from router.releases.store import Activity, ReleaseStore
from router.releases.view import ReleaseView

log = logging.getLogger("router.releases")


def held_body(hot: HotFile | None) -> bytes | None:
    """The identity bytes of a hot cache entry, if it holds them."""
    rep = None if hot is None else hot.forms.get("")
    return None if rep is None else rep.body


def reuse(fetched: LibraryFile, hot: HotFile | None) -> LibraryFile:
    """`fetched` with the bytes and forms this process already holds for it, if any.

    A release the store lost (Redis restarted empty) is stored again from the next check;
    its id is the digest of its contents, so the hot cache's forms are the same bytes:
    reusing them spares a second brotli pass (~14 MB of tables) and a second copy of every
    file while the first is still cached (peak RSS, SPEC section 3).
    """
    if hot is None or "" not in hot.forms:
        return fetched
    forms = {enc: rep.body for enc, rep in hot.forms.items() if enc}
    return replace(fetched, body=hot.forms[""].body, forms=forms)


def with_forms(files: Sequence[LibraryFile]) -> list[LibraryFile]:
    """Compressed forms for the files that have none yet (see `reuse`), all computed by one
    compressor child (router/releases/compression.py)."""
    missing = [i for i, f in enumerate(files) if not f.forms]
    forms = compress_all([(files[i].body, files[i].content_type) for i in missing])
    out = list(files)
    for i, computed in zip(missing, forms, strict=True):
        out[i] = replace(files[i], forms=computed)
    return out


def new_release(
    rid: str,
    label: str,
    system: str,
    files: Sequence[LibraryFile],
    entries: Sequence[FileEntry],
    *,
    now: float,
    expires: float,
) -> ReleaseMeta:
    """The meta a new release is stored with: its files' entries naming the compressed
    forms, with the digests `rid` was made from (`entries`, as hashed before compression:
    same paths, same bytes)."""
    digests = {e.path: e.sha256 for e in entries}
    stored = [f.entry(digests[f.path]) for f in files]
    return ReleaseMeta(
        id=rid,
        digest=release_digest(stored),
        label=label,
        files={e.path: e for e in stored},
        created=now,
        last_active=now,
        last_system=system,
        systems=(system,),
        expires=expires,
    )


class ReleaseChecker:
    def __init__(
        self,
        config: Config,
        store: ReleaseStore,
        fetcher: Fetcher,
        view: ReleaseView,
        archiver: Archiver,
    ) -> None:
        r = config.router
        self.config = config
        self.store = store
        self.fetcher = fetcher
        self.view = view
        self.files = view.files
        self.archiver = archiver
        self.paths = r.release_paths
        self.retention = r.release_retention_days * DAY
        self.errors: dict[str, str] = {}  # last check error per system, "" when it worked
        self.last_check: float | None = None
        self._lock = asyncio.Lock()
        self._recording: dict[str, asyncio.Lock] = {}

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

    async def fingerprint_now(self, system: str) -> str:
        """Check one system now (the gates, before a switch): "" or why not."""
        return next((r.error for r in await self.refresh([system])), "") if self.paths else ""

    async def refresh_quietly(self, systems: Sequence[str]) -> None:
        """`refresh` for the background: a bug in a check ends neither the checks nor the
        router."""
        try:
            await self.refresh(systems)
        except Exception:
            log.exception("release check failed unexpectedly")

    def forget(self, release: str) -> None:
        """`release` expired: no check records it any more."""
        self._recording.pop(release, None)

    async def _check(self, system: str) -> RefreshResult:
        before = self.view.release_of(system)
        cache = self.files.cache
        try:
            files = await self.fetcher.fetch_all(
                system, lambda path: held_body(None if before is None else cache.get(before, path))
            )
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
        self.view.adopt(system, meta, prewarm=not stored)
        if stored:
            for f in files:
                cache.put(prepare(rid, meta.files[f.path], {"": f.body, **f.forms}))
        self.archiver.archive_soon(meta, files if stored else None)
        return RefreshResult(
            system, rid, meta.label, before, stored, len(meta.files), meta.size, ""
        )

    def _check_failed(self, system: str, before: str | None, error: str) -> RefreshResult:
        if self.errors.get(system) != error:
            log.warning(
                "release check of system %s failed: %s; keeping release %s",
                system,
                error,
                before or "(none)",
            )
        self.errors[system] = error
        return RefreshResult(system, before, self.view.label_of(system) or "", before, error=error)

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
            files[:] = [reuse(f, self.files.cache.get(rid, f.path)) for f in files]
            files[:] = await background.run(with_forms, files)
            # The expiry counts from the write: compressing on the low-priority thread can
            # take seconds on a busy machine, and a short retention would be over before the
            # release was stored (it vanished at once, and every check stored it again).
            now = time.time()
            expires = now + self.retention
            meta = new_release(rid, label, system, files, entries, now=now, expires=expires)
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
