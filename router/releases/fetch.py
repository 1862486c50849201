"""Fetching one system's client-library files for a release check.

Breadth first from `router.release_paths`, following what the files reference, a few files
at a time, each read with a size limit; the gateway's reported version comes from its
`stats_url`. Any failure is a `FingerprintError`: a check that cannot see every file must
not produce a release (a partial one would hand browsers a library without its parts).
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Callable, Mapping

import aiohttp
import brotli  # type: ignore[import-untyped]

from router.config import Config
from router.proxy.upstream import Upstream, map_upstream_error
from router.releases import background
from router.releases.model import (
    MAX_FILES,
    LibraryFile,
    guess_type,
    references,
)
from router.systems.stats import parse_reported_version

# One file at a time: concurrent fetches finish in the same loop turns, and their steps back
# to back held the loop for 1-3 ms during a check (5-6 stalls over 1 ms per 15 checks, 2 with
# one fetch at a time and one system at a time; router/server/loop_probe.py, issue 14). A check is
# background work: a few more round trips to the gateway cost nobody anything.
FETCH_CONCURRENCY = 1
STATS_TIMEOUT = 2.0
# The pool has no per-read timer (router/proxy/upstream.py says why): one deadline per file, at
# least the configured read timeout, generous enough for a large file from a slow gateway.
MIN_FILE_DEADLINE = 30.0
READ_CHUNK = 1 << 16
FETCH_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "token-router (release check)"}

# path -> the bytes this process already holds for it (the current release's), if any.
Held = Callable[[str], bytes | None]


class FingerprintError(Exception):
    """A system's libraries could not be fetched completely; its release stays as it was."""


def decode_body(body: bytes, encoding: str) -> bytes:
    """Undo a Content-Encoding the gateway applied although we asked for identity."""
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        return bytes(brotli.decompress(body))
    raise FingerprintError(f"unsupported Content-Encoding {encoding!r}")


def join_body(chunks: list[bytes], encoding: str) -> bytes:
    """The file's bytes from the chunks read, Content-Encoding undone."""
    return decode_body(b"".join(chunks), encoding)


def same_bytes(chunks: list[bytes], known: bytes) -> bool:
    """Whether the chunks read are exactly `known`, compared in place: no joined copy.

    `startswith` at an offset is a memcmp; comparing memoryview slices instead goes byte by
    byte (~3 ms of the loop for a 1 MB file, measured as a run of loop stalls)."""
    if sum(len(c) for c in chunks) != len(known):
        return False
    offset = 0
    for chunk in chunks:
        if not known.startswith(chunk, offset):
            return False
        offset += len(chunk)
    return True


class Fetcher:
    def __init__(self, config: Config, upstreams: Mapping[str, Upstream]) -> None:
        r = config.router
        self.config = config
        self.upstreams = upstreams  # filled by the runtime once its pools are open
        self.paths = r.release_paths
        self.max_bytes = r.release_max_bytes
        self.read_timeout = r.read_timeout

    async def fetch_all(self, system: str, held: Held | None = None) -> list[LibraryFile]:
        """Every configured library file and what they reference, breadth first, bounded.

        A file whose bytes equal what `held` returns for its path is kept as that object and
        the fetched copy is dropped at once: most checks find the release unchanged, and
        holding a second copy of every file of both systems until the check ends raised a
        worker's peak RSS by ~5 MB (SPEC section 3: <= 80 MB).
        """
        upstream = self.upstreams[system]
        seen = set(self.paths)
        queue = list(self.paths)
        files: list[LibraryFile] = []
        total = 0
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)
        while queue:
            batch, queue = queue, []
            answers = await asyncio.gather(
                *(self._fetch(upstream, path, limit, held) for path in batch),
                return_exceptions=True,
            )
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
                if answer is None:
                    continue
                total += len(answer.body)
                if total > self.max_bytes:
                    raise FingerprintError(
                        f"the release is over router.release_max_bytes ({self.max_bytes} bytes)"
                    )
                files.append(answer)
                # In a thread: scanning megabytes of script text would stall the event loop
                # (and with it every request and every switch) for tens of milliseconds.
                found = await background.run(
                    references, answer.path, answer.body, answer.content_type
                )
                for ref in sorted(found):
                    if ref not in seen and len(seen) < MAX_FILES:
                        seen.add(ref)
                        queue.append(ref)
        if not files:
            raise FingerprintError("no library path answered 200")
        return files

    async def _fetch(
        self, upstream: Upstream, path: str, limit: asyncio.Semaphore, held: Held | None
    ) -> LibraryFile | None:
        """One file; None when the system has no such file (404/410)."""
        system = upstream.system.id
        try:
            async with (
                limit,
                asyncio.timeout(max(self.read_timeout, MIN_FILE_DEADLINE)),
                upstream.session.get(
                    upstream.base + path, headers=FETCH_HEADERS, allow_redirects=False
                ) as resp,
            ):
                if resp.status in (404, 410):
                    return None
                if resp.status != 200:
                    raise FingerprintError(f"{path} answered {resp.status}")
                if resp.content_length is not None and resp.content_length > self.max_bytes:
                    raise FingerprintError(f"{path} is over router.release_max_bytes")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(READ_CHUNK):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FingerprintError(f"{path} is over router.release_max_bytes")
                    # A body already buffered is iterated without a pause: yield, so the
                    # loop runs other callbacks between chunks instead of after all of them.
                    await asyncio.sleep(0)
                encoding = resp.headers.get("Content-Encoding", "").strip().lower()
                content_type = resp.headers.get("Content-Type") or guess_type(path)
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = map_upstream_error(exc, system, self.read_timeout)
            raise FingerprintError(f"{path}: {error}") from None
        known = None if held is None else held(path)
        if known is not None and encoding in ("", "identity") and same_bytes(chunks, known):
            return LibraryFile(path, content_type, known)  # no second copy of the bytes
        try:
            # Joining (and decoding) a megabyte is a copy and its page faults, ~1 ms: in the
            # background thread (router/releases/background.py), not on the loop.
            data = await background.run(join_body, chunks, encoding)
        except (OSError, zlib.error, brotli.error) as exc:
            raise FingerprintError(f"{path}: cannot decode {encoding}: {exc}") from None
        if known is not None and known == data:
            data = known
        return LibraryFile(path, content_type, data)

    async def reported_version(self, system: str) -> str | None:
        """The label the gateway reports on its stats_url, if it has one and says it."""
        cfg = self.config.systems[system]
        if not cfg.stats_url:
            return None
        session = self.upstreams[system].session
        try:
            async with session.get(
                cfg.stats_url, timeout=aiohttp.ClientTimeout(total=STATS_TIMEOUT)
            ) as resp:
                if resp.status != 200:
                    return None
                return parse_reported_version(await resp.read())
        except (TimeoutError, aiohttp.ClientError):
            return None
