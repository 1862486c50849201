"""The release service of one router process: fingerprint, store, follow, serve.

Two background tasks: the *check* fetches every system's library files each
`release_check_interval` (and on demand), stores a release the first time its digest is
seen and marks it active; the *sync* re-reads, each `resync_interval`, which release every
system serves (another instance or `token-router releases refresh` may have noticed an
upgrade first) and how long the cached releases live. Requests for `/v/...` are answered
from the hot cache with no Redis round trip; a miss loads the file from the store once,
however many requests wait for it. Store or gateway failures are logged, never fatal:
what is cached keeps being served (fail-static).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from router.config import Config
from router.errors import ConfigError, NotFound, ServiceUnavailable, StoreUnavailable
from router.keys import Keys
from router.releases.cache import HotCache, HotFile, prepare
from router.releases.fetch import Fetcher, FingerprintError
from router.releases.model import (
    LibraryFile,
    ReleaseMeta,
    choose_encoding,
    choose_label,
    compress_forms,
    not_modified,
    release_digest,
    release_id,
    valid_release_id,
)
from router.releases.paths import is_library_path
from router.releases.store import Activity, ReleaseStore, open_release_store
from router.tasks import stop_tasks
from router.upstream import Upstream

log = logging.getLogger("router.releases")

DAY = 86_400.0
NEGATIVE_TTL = 5.0  # unknown release ids are remembered this long (bounded), sparing Redis
NEGATIVE_MAX = 1024


@dataclass(frozen=True, slots=True)
class Current:
    release: str
    label: str


@dataclass(frozen=True, slots=True)
class RefreshResult:
    system: str
    release: str | None = None
    label: str = ""
    previous: str | None = None
    stored: bool = False  # this check stored the release (first time its digest was seen)
    files: int = 0
    size: int = 0
    error: str = ""

    @property
    def changed(self) -> bool:
        return self.release is not None and self.release != self.previous

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "release": self.release,
            "label": self.label or None,
            "previous": self.previous,
            "changed": self.changed,
            "stored": self.stored,
            "files": self.files,
            "size": self.size,
            "error": self.error or None,
        }


def check_release_config(config: Config) -> None:
    """Release keys that only make sense together (raised at start, as a ConfigError)."""
    r = config.router
    for path in r.release_paths:
        if not is_library_path(path):
            raise ConfigError(
                "router.release_paths",
                f"{path!r} is not a library path (/gateway/<name>.js or /assistserver/sdk/web/...)",
            )
    if r.release_check_interval >= r.release_retention_days * DAY:
        raise ConfigError(
            "router.release_check_interval",
            "must be shorter than release_retention_days, or active releases would expire",
        )


def _with_forms(files: Sequence[LibraryFile]) -> list[LibraryFile]:
    return [replace(f, forms=compress_forms(f.body, f.content_type)) for f in files]


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
        self.cache = HotCache(r.release_cache_bytes)
        # Metrics hook (runtime.py): called with True for a cache hit, False for a miss.
        self.on_lookup: Callable[[bool], None] = lambda hit: None
        self.current: dict[str, Current] = {}
        self.errors: dict[str, str] = {}  # last check error per system, "" when it worked
        self.store_error = ""
        self.last_check: float | None = None
        self._metas: dict[str, ReleaseMeta] = {}
        self._expires: dict[str, float] = {}
        self._missing: OrderedDict[str, float] = OrderedDict()
        self._loading: dict[tuple[str, str], asyncio.Task[HotFile]] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._recheck: asyncio.Task[None] | None = None
        self._recording: dict[str, asyncio.Lock] = {}

    @classmethod
    def create(cls, config: Config, keys: Keys, upstreams: Mapping[str, Upstream]) -> Releases:
        r = config.router
        store = open_release_store(r.redis_url, keys, timeout=r.redis_timeout)
        return cls(config, store, upstreams)

    # --- hand-out ------------------------------------------------------------------------

    def release_of(self, system: str) -> str | None:
        found = self.current.get(system)
        return None if found is None else found.release

    def label_of(self, system: str) -> str | None:
        found = self.current.get(system)
        return found.label or None if found is not None else None

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
        try:
            await self.sync(prewarm=True)
        except StoreUnavailable as exc:
            self._store_failed(exc)
        self._tasks.append(asyncio.create_task(self._check_loop(), name="release-check"))
        self._tasks.append(asyncio.create_task(self._sync_loop(), name="release-sync"))

    async def close(self) -> None:
        tasks = [*self._tasks, *self._background, *self._loading.values()]
        if self._recheck is not None:
            tasks.append(self._recheck)
        await stop_tasks(tasks)
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
                self._store_failed(exc)
            except Exception:
                log.exception("release sync failed unexpectedly")

    def _store_failed(self, exc: StoreUnavailable) -> None:
        if not self.store_error:
            log.error("%s; serving cached release files until it returns", exc)
        self.store_error = str(exc)

    def _store_ok(self) -> None:
        if self.store_error:
            log.warning("release store %s is back", self.store.description)
        self.store_error = ""

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
            meta = await self._meta(release, now)
            if meta is not None:
                self._adopt(system, meta, prewarm=prewarm)
        known = sorted(set(self._metas) | self.cache.releases())
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
            self._expires[release] = alive[0]
            meta = self._metas.get(release)
            if meta is not None and meta.label != alive[1]:
                self._metas[release] = replace(meta, label=alive[1])
                for system, cur in self.current.items():
                    if cur.release == release:
                        self.current[system] = Current(release, alive[1])
        if lost and (self._recheck is None or self._recheck.done()):
            log.warning("release store lost the releases of %s; checking again", ", ".join(lost))
            self._recheck = asyncio.create_task(self._refresh_quietly(lost))
        self._store_ok()

    async def _refresh_quietly(self, systems: Sequence[str]) -> None:
        try:
            await self.refresh(systems)
        except Exception:
            log.exception("release check failed unexpectedly")

    def _adopt(self, system: str, meta: ReleaseMeta, *, prewarm: bool) -> None:
        before = self.current.get(system)
        self.current[system] = Current(meta.id, meta.label)
        self._metas[meta.id] = meta
        self._expires[meta.id] = meta.expires
        self._missing.pop(meta.id, None)
        if before is not None and before.release != meta.id:
            log.warning(
                "system %s now serves release %s (%s); before: %s (%s)",
                system,
                meta.id,
                meta.label or "no label",
                before.release,
                before.label or "no label",
            )
        if prewarm and any((meta.id, p) not in self.cache for p in meta.files):
            task = asyncio.create_task(self._prewarm(meta))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _forget(self, release: str) -> None:
        self._recording.pop(release, None)
        self._metas.pop(release, None)
        self._expires.pop(release, None)
        self.cache.drop_release(release)

    async def _prewarm(self, meta: ReleaseMeta) -> None:
        """Load a current release's files, so even its first request is a cache hit."""
        for path in meta.files:
            if (meta.id, path) in self.cache:
                continue
            try:
                await self._load(meta.id, path)
            except (NotFound, ServiceUnavailable) as exc:
                log.debug("prewarm of %s%s stopped: %s", meta.id, path, exc)
                return

    # --- checking the systems ------------------------------------------------------------

    async def refresh(self, systems: Sequence[str] | None = None) -> list[RefreshResult]:
        """Fingerprint `systems` (default all) now; concurrent calls run one after another."""
        wanted = list(systems or self.config.system_ids)
        if not self.paths:
            return [RefreshResult(s, error="router.release_paths is empty") for s in wanted]
        async with self._lock:
            results = await asyncio.gather(*(self._check(s) for s in wanted))
        self.last_check = time.time()
        return list(results)

    async def _check(self, system: str) -> RefreshResult:
        previous = self.current.get(system)
        before = None if previous is None else previous.release
        try:
            files = await self.fetcher.fetch_all(system)
            reported = await self.fetcher.reported_version(system)
        except FingerprintError as exc:
            return self._check_failed(system, before, f"libraries not fetched: {exc}")
        # Hashing megabytes off the event loop, for the same reason as the reference scan.
        entries = await asyncio.to_thread(lambda: [f.entry() for f in files])
        rid = release_id(release_digest(entries))
        # Two systems may serve the very same bytes (A upgraded to B's version): one records
        # the release, the other then finds it stored instead of compressing it again.
        lock = self._recording.setdefault(rid, asyncio.Lock())
        try:
            async with lock:
                stored, meta = await self._record(system, rid, files, reported)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return self._check_failed(system, before, f"release {rid} not stored: {exc}")
        self._store_ok()
        if self.errors.get(system):
            log.warning("release check of system %s works again", system)
        self.errors[system] = ""
        self._adopt(system, meta, prewarm=not stored)
        if stored:
            for f in files:
                self.cache.put(prepare(rid, meta.files[f.path], {"": f.body, **f.forms}))
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
        return RefreshResult(system, before, self.label_of(system) or "", before, error=error)

    async def _record(
        self, system: str, rid: str, files: list[LibraryFile], reported: str | None
    ) -> tuple[bool, ReleaseMeta]:
        """Store the release if new, mark it active; return (stored, meta as stored)."""
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
            files[:] = await asyncio.to_thread(_with_forms, files)
            meta = ReleaseMeta(
                id=rid,
                digest=release_digest(f.entry() for f in files),
                label=label,
                files={f.path: f.entry() for f in files},
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

    # --- serving -------------------------------------------------------------------------

    async def respond(self, request: web.Request, release: str, path: str) -> web.Response:
        """The answer to GET/HEAD /v/{release}{path}: 200 (maybe compressed) or 304."""
        hot = self.cache.get(release, path)
        if hot is None or self._expires.get(release, 0.0) <= time.time():
            self.on_lookup(False)
            hot = await self._load(release, path)
        else:
            self.on_lookup(True)
        encoding = choose_encoding(request.headers.get("Accept-Encoding", ""), hot.encodings)
        rep = hot.forms[encoding]
        condition = request.headers.get("If-None-Match")
        if condition is not None and not_modified(condition, rep.etag):
            return web.Response(status=304, headers=rep.headers_304)
        return web.Response(body=rep.body, headers=rep.headers)

    async def _load(self, release: str, path: str) -> HotFile:
        """The file from the store, once per (release, path) however many requests wait."""
        if not valid_release_id(release):
            raise NotFound(f"unknown release {release!r}")
        key = (release, path)
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._load_now(release, path))
            self._loading[key] = task
            task.add_done_callback(lambda t: self._loaded(key, t))
        # Shielded: a client that goes away must not cancel the load others wait for.
        return await asyncio.shield(task)

    def _loaded(self, key: tuple[str, str], task: asyncio.Task[HotFile]) -> None:
        self._loading.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an abandoned failure is not reported

    async def _meta(self, release: str, now: float) -> ReleaseMeta | None:
        meta = self._metas.get(release)
        if meta is not None and self._expires.get(release, 0.0) > now:
            return meta
        if self._missing.get(release, 0.0) > now:
            return None
        fresh = await self.store.meta(release)
        if fresh is None:
            self._forget(release)
            self._missing[release] = now + NEGATIVE_TTL
            while len(self._missing) > NEGATIVE_MAX:
                self._missing.popitem(last=False)
            return None
        self._metas[release] = fresh
        self._expires[release] = fresh.expires
        return fresh

    async def _load_now(self, release: str, path: str) -> HotFile:
        cached = self.cache.get(release, path)
        try:
            meta = await self._meta(release, time.time())
            if meta is None:
                raise NotFound(f"unknown or expired release {release!r}")
            entry = meta.files.get(path)
            if entry is None:
                raise NotFound(f"release {release} has no file {path}")
            if cached is not None:
                return cached
            blobs = await self.store.file(release, path)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            if cached is not None:
                return cached  # fail-static: what was served before is served on
            raise ServiceUnavailable(
                f"release {release} is not cached here and the release store is away; "
                "try again shortly"
            ) from None
        if "" not in blobs:
            raise NotFound(f"unknown or expired release {release!r}")
        hot = prepare(release, entry, blobs)
        self.cache.put(hot)
        return hot

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
