"""Serving `/v/{release}/...`: the releases this process knows and the hot cache of their files.

Requests are answered from the hot cache with no Redis round trip; a miss loads the file
from the store once, however many requests wait for it. Unknown release ids are remembered
for a few seconds (bounded), sparing Redis. When the store is away, what is cached keeps
being served (fail-static). The view (view.py) feeds in what the checker and the follower
learn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from router.cancellation import stop_tasks
from router.errors import NotFound, ServiceUnavailable, StoreUnavailable
from router.releases.archive import ReleaseArchive
from router.releases.cache import HotCache, HotFile, prepare
from router.releases.model import ReleaseMeta, choose_encoding, not_modified, valid_release_id
from router.releases.store import ReleaseStore
from router.responses import body_response

log = logging.getLogger("router.releases")

NEGATIVE_TTL = 5.0  # unknown release ids are remembered this long (bounded), sparing Redis
NEGATIVE_MAX = 1024


class ReleaseFiles:
    def __init__(
        self, store: ReleaseStore, cache_bytes: int, archive: ReleaseArchive | None = None
    ) -> None:
        self.store = store
        # This instance's durable archive (archive.py): what Redis lost is served from it.
        self.archive = archive
        self.cache = HotCache(cache_bytes)
        # Metrics hook (wiring): called with True for a cache hit, False for a miss.
        self.on_lookup: Callable[[bool], None] = lambda hit: None
        self.store_error = ""  # the last release store failure, "" while it works
        self.metas: dict[str, ReleaseMeta] = {}
        self.expires: dict[str, float] = {}
        self._missing: OrderedDict[str, float] = OrderedDict()
        self._loading: dict[tuple[str, str], asyncio.Task[HotFile]] = {}

    async def close(self) -> None:
        await stop_tasks(list(self._loading.values()))

    # --- what is known -------------------------------------------------------------------

    def adopt(self, meta: ReleaseMeta) -> None:
        self.metas[meta.id] = meta
        self.expires[meta.id] = meta.expires
        self._missing.pop(meta.id, None)

    def forget(self, release: str) -> None:
        self.metas.pop(release, None)
        self.expires.pop(release, None)
        self.cache.drop_release(release)

    def store_failed(self, exc: StoreUnavailable) -> None:
        if not self.store_error:
            log.error("%s; serving cached release files until it returns", exc)
        self.store_error = str(exc)

    def store_ok(self) -> None:
        if self.store_error:
            log.warning("release store %s is back", self.store.description)
        self.store_error = ""

    async def meta(self, release: str, now: float) -> ReleaseMeta | None:
        meta = self.metas.get(release)
        if meta is not None and self.expires.get(release, 0.0) > now:
            return meta
        if self._missing.get(release, 0.0) > now:
            return None
        fresh = await self.store.meta(release)
        if fresh is None:
            self.forget(release)
            self._missing[release] = now + NEGATIVE_TTL
            while len(self._missing) > NEGATIVE_MAX:
                self._missing.popitem(last=False)
            return None
        self.metas[release] = fresh
        self.expires[release] = fresh.expires
        return fresh

    async def prewarm(self, meta: ReleaseMeta) -> None:
        """Load a current release's files, so even its first request is a cache hit."""
        for path in meta.files:
            if (meta.id, path) in self.cache:
                continue
            try:
                await self.load(meta.id, path)
            except (NotFound, ServiceUnavailable) as exc:
                log.debug("prewarm of %s%s stopped: %s", meta.id, path, exc)
                return

    # --- serving -------------------------------------------------------------------------

    async def respond(self, request: web.BaseRequest, release: str, path: str) -> web.Response:
        """The answer to GET/HEAD /v/{release}{path}: 200 (maybe compressed) or 304."""
        hot = self.cache.get(release, path)
        if hot is None or self.expires.get(release, 0.0) <= time.time():
            self.on_lookup(False)
            hot = await self.load(release, path)
        else:
            self.on_lookup(True)
        encoding = choose_encoding(request.headers.get("Accept-Encoding", ""), hot.encodings)
        rep = hot.forms[encoding]
        condition = request.headers.get("If-None-Match")
        if condition is not None and not_modified(condition, rep.etag):
            return web.Response(status=304, headers=rep.headers_304)
        return body_response(rep.body, rep.headers)

    async def load(self, release: str, path: str) -> HotFile:
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

    async def _from_archive(self, release: str, path: str) -> HotFile | None:
        """A file Redis does not have (lost, or away) from this instance's archive, checked
        against its digest (a corrupted file is never served)."""
        archive = self.archive
        if archive is None:
            return None
        now = time.time()
        meta = await asyncio.to_thread(archive.meta, release, now)
        if meta is None or path not in meta.files:
            return None
        blobs = await asyncio.to_thread(archive.file, release, path, now)
        if not blobs:
            return None
        self.adopt(meta)
        hot = prepare(release, meta.files[path], blobs)
        self.cache.put(hot)
        return hot

    async def _load_now(self, release: str, path: str) -> HotFile:
        cached = self.cache.get(release, path)
        try:
            meta = await self.meta(release, time.time())
            if meta is None:
                archived = await self._from_archive(release, path)
                if archived is not None:
                    return archived
                raise NotFound(f"unknown or expired release {release!r}")
            entry = meta.files.get(path)
            if entry is None:
                raise NotFound(f"release {release} has no file {path}")
            if cached is not None:
                return cached
            blobs = await self.store.file(release, path)
        except StoreUnavailable as exc:
            self.store_failed(exc)
            if cached is not None:
                return cached  # fail-static: what was served before is served on
            archived = await self._from_archive(release, path)
            if archived is not None:
                return archived
            raise ServiceUnavailable(
                f"release {release} is not cached here and the release store is away; "
                "try again shortly"
            ) from None
        if "" not in blobs:
            raise NotFound(f"unknown or expired release {release!r}")
        hot = prepare(release, entry, blobs)
        self.cache.put(hot)
        return hot
