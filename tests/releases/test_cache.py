"""The hot cache: ready-to-send forms of a file, bounded by the bytes it holds."""

from __future__ import annotations

import hashlib
from typing import Any

from router.releases.cache import HotCache, prepare
from router.releases.compression import compress_forms
from router.releases.model import IMMUTABLE, FileEntry, LibraryFile

JS = "/gateway/adapter.js"
BOTH = frozenset({"gzip", "br"})


def entry(path: str, body: bytes, content_type: str = "application/javascript") -> FileEntry:
    return LibraryFile(path, content_type, body).entry()


def test_prepared_file_headers_and_distinct_etags() -> None:
    body = b"x" * 1000
    item = LibraryFile(JS, "application/javascript", body, compress_forms(body, "text/plain"))
    hot = prepare("0123456789abcdef", item.entry(), {"": body, **item.forms})
    identity, zipped = hot.forms[""], hot.forms["gzip"]
    assert identity.etag == f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    assert zipped.etag != identity.etag and hot.forms["br"].etag not in (identity.etag,)
    assert identity.headers["Cache-Control"] == IMMUTABLE
    assert identity.headers["Vary"] == "Accept-Encoding"
    assert "Content-Encoding" not in identity.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Content-Type" not in zipped.headers_304
    assert hot.encodings == BOTH


def test_hot_cache_is_bounded_lru() -> None:
    def hot(release: str, size: int) -> Any:
        body = b"a" * size
        return prepare(release, entry(JS, body), {"": body})

    cache = HotCache(capacity=250)
    assert cache.put(hot("r1", 100)) and cache.put(hot("r2", 100))
    assert cache.get("r1", JS) is not None  # r1 is now the most recently used
    assert cache.put(hot("r3", 100))
    assert cache.get("r2", JS) is None and cache.get("r1", JS) is not None
    assert cache.used == 200
    assert not cache.put(hot("r4", 300))  # bigger than the whole cache: never held
    cache.drop_release("r1")
    assert cache.get("r1", JS) is None and cache.used == 100
