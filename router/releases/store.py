"""Where release bytes live: one protocol, a Redis implementation shared by every instance and
an in-process one for `memory://`.

Layout (keys.py): `<p>:releases` is a sorted set of release ids scored by expiry time;
`<p>:release:<id>:meta` a hash (label, digest, manifest, times, systems);
`<p>:release:<id>:files` a hash of `id:<path>`, `gzip:<path>`, `br:<path>` -> bytes;
`<p>:system:<sid>:release` the release a system served when last fingerprinted. Both
per-release hashes carry a Redis expiry at the release's expiry time, pushed forward every
time a system is seen serving it, so retention needs no sweeper: Redis deletes them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from redis.exceptions import RedisError

from router.errors import StoreUnavailable
from router.releases.model import LibraryFile, ReleaseMeta, manifest_from_json, manifest_json
from router.state.key_problems import diagnose, is_wrong_type
from router.state.keys import Keys
from router.state.redis_client import close_client, describe, redis_client, unavailable
from router.state.sentinel import SentinelTarget

FORMS = ("", "gzip", "br")  # identity first


def field_name(encoding: str, path: str) -> bytes:
    return f"{encoding or 'id'}:{path}".encode()


@dataclass(frozen=True, slots=True)
class Activity:
    """A system was seen serving a release at `now`: what `touch` records."""

    release: str
    system: str
    now: float
    expires: float
    label: str = ""


class ReleaseStore(Protocol):
    description: str

    async def close(self) -> None: ...
    async def exists(self, release: str) -> bool: ...
    async def put(self, meta: ReleaseMeta, files: Sequence[LibraryFile]) -> None: ...
    async def touch(self, activity: Activity) -> None: ...
    async def meta(self, release: str) -> ReleaseMeta | None: ...
    async def file(self, release: str, path: str) -> dict[str, bytes]: ...
    async def system_releases(self, systems: Sequence[str]) -> dict[str, str | None]: ...
    async def liveness(self, releases: Sequence[str]) -> dict[str, tuple[float, str] | None]: ...
    async def list(self, now: float) -> list[ReleaseMeta]: ...


def _meta_fields(meta: ReleaseMeta) -> dict[str, bytes | str]:
    return {
        "label": meta.label,
        "digest": meta.digest,
        "manifest": manifest_json(meta.files.values()),
        "created": repr(meta.created),
        "last_active": repr(meta.last_active),
        "last_system": meta.last_system,
        "systems": ",".join(meta.systems),
    }


def _text(raw: Mapping[bytes, bytes], name: str) -> str:
    return raw.get(name.encode(), b"").decode("utf-8", "replace")


def _meta_from(release: str, raw: Mapping[bytes, bytes], expires: float) -> ReleaseMeta | None:
    manifest = raw.get(b"manifest")
    if not manifest:
        return None
    return ReleaseMeta(
        id=release,
        digest=_text(raw, "digest"),
        label=_text(raw, "label"),
        files=manifest_from_json(manifest),
        created=float(_text(raw, "created") or 0),
        last_active=float(_text(raw, "last_active") or 0),
        last_system=_text(raw, "last_system"),
        systems=tuple(s for s in _text(raw, "systems").split(",") if s),
        expires=expires,
    )


def _str(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# A touch is one atomic step, and only for a release the store holds in full (its manifest):
# a Redis that restarted empty between a check's read and its touch must not get a meta
# hash of a few fields, a release index entry and a system pointer for a release it lacks.
# Such a ghost passed for stored (EXISTS), so no instance wrote the real one back from its
# archive, and a new instance answered 404 for its files (a flake of
# tests/flows/test_recovery.py under load).
_TOUCH = """
if redis.call('HEXISTS', KEYS[1], 'manifest') == 0 then
  return 0
end
local systems = redis.call('HGET', KEYS[1], 'systems') or ''
local known = false
for s in string.gmatch(systems, '[^,]+') do
  if s == ARGV[2] then known = true end
end
if not known then
  if systems == '' then systems = ARGV[2] else systems = systems .. ',' .. ARGV[2] end
end
redis.call('HSET', KEYS[1], 'last_active', ARGV[1], 'last_system', ARGV[2], 'systems', systems)
if ARGV[3] ~= '' then
  local label = redis.call('HGET', KEYS[1], 'label')
  if not label or label == '' then redis.call('HSET', KEYS[1], 'label', ARGV[3]) end
end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
-- The members' own keys expire in Redis; the index is trimmed here.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
redis.call('SET', KEYS[4], ARGV[6])
return 1
"""


class RedisReleaseStore:
    """Release bytes in the shared Redis. Its own client: bytes in and out, not text."""

    def __init__(self, url: str | SentinelTarget, keys: Keys, *, timeout: float = 1.0) -> None:
        self.description = describe(url)
        self.keys = keys
        # The policy of every store (redis_client.py), with a longer command timeout: a
        # release is a few MB in one transaction, writing it may take longer than one small
        # command.
        self._client = redis_client(
            url,
            timeout=timeout,
            command_timeout=max(timeout, 5.0),
            decode_responses=False,
            client_name="token-router-releases",
        )
        self._touch = self._client.register_script(_TOUCH)

    async def close(self) -> None:
        await close_client(self._client)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return unavailable(self.description, exc)

    async def _failure(self, exc: BaseException, *touched: str) -> StoreUnavailable:
        """A key of the wrong type named with its fix (key_problems.py), else "unavailable"."""
        if is_wrong_type(exc):
            return await diagnose(self._client, self.keys, touched, exc)
        return self._unavailable(exc)

    async def exists(self, release: str) -> bool:
        try:
            return bool(await self._client.exists(self.keys.release_meta(release)))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def put(self, meta: ReleaseMeta, files: Sequence[LibraryFile]) -> None:
        """Store a release atomically (MULTI/EXEC): a reader sees all of it or nothing."""
        k = self.keys
        blobs: dict[bytes, bytes] = {}
        for f in files:
            blobs[field_name("", f.path)] = f.body
            for encoding, data in f.forms.items():
                blobs[field_name(encoding, f.path)] = data
        expire_ms = int(meta.expires * 1000)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(k.release_files(meta.id), mapping=blobs)  # type: ignore[arg-type]
                pipe.hset(k.release_meta(meta.id), mapping=_meta_fields(meta))  # type: ignore[arg-type]
                pipe.pexpireat(k.release_files(meta.id), expire_ms)
                pipe.pexpireat(k.release_meta(meta.id), expire_ms)
                pipe.zadd(k.releases, {meta.id: meta.expires})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, k.release_files(meta.id), k.release_meta(meta.id), k.releases
            ) from exc

    async def touch(self, activity: Activity) -> None:
        """Push the release's expiry forward and record who served it and when; nothing
        when the store does not hold the release (see _TOUCH)."""
        k = self.keys
        a = activity
        meta_key = k.release_meta(a.release)
        files_key = k.release_files(a.release)
        try:
            await self._touch(
                keys=[meta_key, files_key, k.releases, k.system_release(a.system)],
                args=[repr(a.now), a.system, a.label, int(a.expires * 1000), a.expires, a.release],
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, meta_key, files_key, k.releases, k.system_release(a.system)
            ) from exc

    async def meta(self, release: str) -> ReleaseMeta | None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.release_meta(release))
                pipe.zscore(self.keys.releases, release)
                raw, score = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, self.keys.release_meta(release), self.keys.releases
            ) from exc
        if score is None or float(score) <= time.time():
            return None
        return _meta_from(release, raw, float(score))

    async def file(self, release: str, path: str) -> dict[str, bytes]:
        try:
            values = await self._client.hmget(
                self.keys.release_files(release), [field_name(e, path) for e in FORMS]
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.release_files(release)) from exc
        return {e: v for e, v in zip(FORMS, values, strict=True) if isinstance(v, bytes)}

    async def system_releases(self, systems: Sequence[str]) -> dict[str, str | None]:
        try:
            values = await self._client.mget([self.keys.system_release(s) for s in systems])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return {s: None if v is None else _str(v) for s, v in zip(systems, values, strict=True)}

    async def liveness(self, releases: Sequence[str]) -> dict[str, tuple[float, str] | None]:
        """Release -> (expiry, label), or None once it expired: one round trip for all."""
        if not releases:
            return {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zmscore(self.keys.releases, list(releases))
                for release in releases:
                    pipe.hget(self.keys.release_meta(release), "label")
                scores, *labels = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, self.keys.releases, *(self.keys.release_meta(r) for r in releases)
            ) from exc
        found: dict[str, tuple[float, str] | None] = {}
        for release, score, label in zip(releases, scores, labels, strict=True):
            alive = score is not None and label is not None
            found[release] = (float(score), _str(label)) if alive else None
        return found

    async def list(self, now: float) -> list[ReleaseMeta]:
        """Every release not yet expired, newest activity first; prunes expired ids."""
        k = self.keys
        try:
            await self._client.zremrangebyscore(k.releases, "-inf", now)
            raw_rows: list[tuple[bytes, float]] = await self._client.zrange(
                k.releases, 0, -1, withscores=True
            )  # type: ignore[assignment]
            rows = [(_str(member), float(score)) for member, score in raw_rows]
            async with self._client.pipeline(transaction=False) as pipe:
                for member, _ in rows:
                    pipe.hgetall(k.release_meta(member))
                metas = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, k.releases) from exc
        found = []
        for (member, score), raw in zip(rows, metas, strict=True):
            meta = _meta_from(member, raw, score)
            if meta is not None:
                found.append(meta)
        return sorted(found, key=lambda m: m.last_active, reverse=True)


class MemoryReleaseStore:
    """`memory://`: the same behaviour inside one process (the demo, single-node trials)."""

    def __init__(self) -> None:
        self.description = "memory://"
        self.metas: dict[str, ReleaseMeta] = {}
        self.files: dict[str, dict[str, dict[str, bytes]]] = {}
        self.systems: dict[str, str] = {}

    def _alive(self, release: str) -> ReleaseMeta | None:
        meta = self.metas.get(release)
        if meta is not None and meta.expires <= time.time():
            del self.metas[release]
            self.files.pop(release, None)
            return None
        return meta

    async def close(self) -> None:
        return None

    async def exists(self, release: str) -> bool:
        return self._alive(release) is not None

    async def put(self, meta: ReleaseMeta, files: Sequence[LibraryFile]) -> None:
        self.metas[meta.id] = meta
        self.files[meta.id] = {f.path: {"": f.body, **f.forms} for f in files}

    async def touch(self, activity: Activity) -> None:
        a = activity
        meta = self._alive(a.release)
        if meta is None:
            return
        systems = meta.systems if a.system in meta.systems else (*meta.systems, a.system)
        self.metas[a.release] = replace(
            meta,
            last_active=a.now,
            last_system=a.system,
            systems=systems,
            expires=a.expires,
            label=meta.label or a.label,
        )
        self.systems[a.system] = a.release

    async def meta(self, release: str) -> ReleaseMeta | None:
        return self._alive(release)

    async def file(self, release: str, path: str) -> dict[str, bytes]:
        if self._alive(release) is None:
            return {}
        return dict(self.files.get(release, {}).get(path, {}))

    async def system_releases(self, systems: Sequence[str]) -> dict[str, str | None]:
        return {s: self.systems.get(s) for s in systems}

    async def liveness(self, releases: Sequence[str]) -> dict[str, tuple[float, str] | None]:
        found = {r: self._alive(r) for r in releases}
        return {r: None if m is None else (m.expires, m.label) for r, m in found.items()}

    async def list(self, now: float) -> list[ReleaseMeta]:
        alive = [m for r in list(self.metas) if (m := self._alive(r)) is not None]
        return sorted(alive, key=lambda m: m.last_active, reverse=True)


def open_release_store(url: str | SentinelTarget, keys: Keys, *, timeout: float) -> ReleaseStore:
    if isinstance(url, str) and url.startswith("memory://"):
        return MemoryReleaseStore()
    return RedisReleaseStore(url, keys, timeout=timeout)
