"""The per-instance cache of hot release files, each ready to send in every form.

A cache hit answers `/v/...` without Redis, hashing or compression: the identity, gzip and
brotli bytes and their response headers were all prepared when the file entered the cache.
Bounded in bytes (all forms counted), least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from router.releases.model import IMMUTABLE, FileEntry

RELEASE_HEADER = "X-Token-Router-Release"


@dataclass(frozen=True, slots=True)
class Representation:
    """One form of one file: the bytes, its ETag and the headers of a 200 and of a 304."""

    body: bytes
    etag: str
    headers: Mapping[str, str]
    headers_304: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class HotFile:
    release: str
    path: str
    forms: Mapping[str, Representation]  # "" (identity), "gzip", "br"
    encodings: frozenset[str]  # the compressed forms present, for choose_encoding
    size: int  # bytes held, all forms


def prepare(release: str, entry: FileEntry, blobs: Mapping[str, bytes]) -> HotFile:
    """Build the ready-to-send forms of a file from its stored bytes (identity required)."""
    forms: dict[str, Representation] = {}
    for encoding, body in blobs.items():
        etag = entry.etag(encoding)
        # Vary on every form, identity included: caches must not hand gzip to a client
        # that did not ask for it, nor identity to one that did.
        common = {
            "ETag": etag,
            "Cache-Control": IMMUTABLE,
            "Vary": "Accept-Encoding",
            RELEASE_HEADER: release,
        }
        headers = {
            **common,
            "Content-Type": entry.content_type,
            "X-Content-Type-Options": "nosniff",
        }
        if encoding:
            headers["Content-Encoding"] = encoding
        forms[encoding] = Representation(body, etag, headers, common)
    return HotFile(
        release=release,
        path=entry.path,
        forms=forms,
        encodings=frozenset(e for e in forms if e),
        size=sum(len(b) for b in blobs.values()),
    )


class HotCache:
    """LRU of (release, path) -> HotFile, bounded by the bytes it holds."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._items: OrderedDict[tuple[str, str], HotFile] = OrderedDict()

    def get(self, release: str, path: str) -> HotFile | None:
        key = (release, path)
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, hot: HotFile) -> bool:
        """Keep `hot`, evicting the least recently used; False if it alone is too big."""
        if hot.size > self.capacity:
            return False
        key = (hot.release, hot.path)
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= old.size
        self._items[key] = hot
        self.used += hot.size
        while self.used > self.capacity:
            _, evicted = self._items.popitem(last=False)
            self.used -= evicted.size
        return True

    def drop_release(self, release: str) -> None:
        for key in [k for k in self._items if k[0] == release]:
            self.used -= self._items.pop(key).size

    def releases(self) -> set[str]:
        return {release for release, _ in self._items}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
