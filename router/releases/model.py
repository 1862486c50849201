"""Releases of client libraries: pure functions and plain types, no sockets, no Redis, no clock.

A *release* is the set of library files one system served when it was fingerprinted. Its id
is derived from the content (paths, content types and bytes), so the same bytes get the same
id on every router instance and a single changed byte gets a new one: a URL under
`/v/{release}/...` can never point at other bytes than the ones it was handed out for.
The I/O lives in store.py (Redis / memory://), cache.py (hot files), serving.py (`/v/...`),
checker.py (fingerprinting) and follower.py (keeping current).
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from router.proxy.paths import is_library_path

ID_LENGTH = 16  # hex digits of the digest in the URL: 64 bits, ample for tens of releases
RELEASE_ID = re.compile(r"[0-9a-f]{16}")
IMMUTABLE = "public, max-age=31536000, immutable"
MAX_FILES = 256  # a bound on reference discovery: a release is tens of files, not thousands
ENCODINGS = ("br", "gzip")  # in order of preference when the client accepts both equally

_TYPES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".html": "text/html",
    ".map": "application/json",
}
# Field names a gateway's stats answer may use for its release label.


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a release, without its bytes: what the manifest stores."""

    path: str
    content_type: str
    size: int
    sha256: str  # hex digest of the identity bytes: the strong ETag, computed once
    encodings: tuple[str, ...] = ()  # compressed forms stored beside the identity bytes

    def etag(self, encoding: str = "") -> str:
        """A strong ETag per representation: RFC 9110 8.8.3 wants gzip and br to differ."""
        tag = self.sha256[:32]
        return f'"{tag}-{encoding}"' if encoding else f'"{tag}"'

    def to_json(self) -> list[Any]:
        return [self.path, self.content_type, self.size, self.sha256, list(self.encodings)]

    @classmethod
    def from_json(cls, row: list[Any]) -> FileEntry:
        path, content_type, size, sha, encodings = row
        return cls(str(path), str(content_type), int(size), str(sha), tuple(encodings))


@dataclass(frozen=True, slots=True)
class LibraryFile:
    """A fetched file with its compressed forms (encoding -> bytes) once computed."""

    path: str
    content_type: str
    body: bytes
    forms: Mapping[str, bytes] = field(default_factory=dict)

    def entry(self, sha256: str | None = None) -> FileEntry:
        """`sha256`: the body's digest when already known (the same bytes hashed earlier in
        the check), so megabytes are not hashed twice."""
        return FileEntry(
            self.path,
            self.content_type,
            len(self.body),
            sha256 or hashlib.sha256(self.body).hexdigest(),
            tuple(e for e in ENCODINGS if e in self.forms),
        )


@dataclass(frozen=True, slots=True)
class ReleaseMeta:
    """What the store knows about a release (everything but the bytes)."""

    id: str
    digest: str
    label: str
    files: Mapping[str, FileEntry]
    created: float
    last_active: float
    last_system: str
    systems: tuple[str, ...] = ()
    expires: float = 0.0  # last_active + retention; the store deletes the release then

    @property
    def size(self) -> int:
        """Identity bytes of every file: what `release_max_bytes` limits."""
        return sum(f.size for f in self.files.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.id,
            "label": self.label or None,
            "digest": self.digest,
            "files": len(self.files),
            "size": self.size,
            "created": self.created,
            "last_active": self.last_active,
            "last_system": self.last_system,
            "systems": list(self.systems),
            "expires": self.expires,
            "base": f"/v/{self.id}",
        }


def manifest_json(files: Iterable[FileEntry]) -> bytes:
    return orjson.dumps([f.to_json() for f in sorted(files, key=lambda f: f.path)])


def manifest_from_json(raw: bytes) -> dict[str, FileEntry]:
    return {e.path: e for e in (FileEntry.from_json(row) for row in orjson.loads(raw))}


# --- identity ----------------------------------------------------------------------------


def release_digest(files: Iterable[FileEntry]) -> str:
    """SHA-256 over the sorted manifest: path, content type and file digest of every file.

    Order-independent (files are fetched concurrently) and sensitive to every byte served,
    including a changed Content-Type, since the router serves that too.
    """
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.content_type}\0{f.sha256}\n".encode())
    return h.hexdigest()


def release_id(digest: str) -> str:
    return digest[:ID_LENGTH]


def valid_release_id(text: str) -> bool:
    """Only ids we could have made reach the store: no key injection, no wasted look-up."""
    return RELEASE_ID.fullmatch(text) is not None


def choose_label(
    configured: str, reported: str | None, release: str, others: Mapping[str, str]
) -> str:
    """The human label of `release`, newly seen on a system whose other live releases are
    `others` (release id -> label).

    What the gateway reports describes the bytes just fetched, so it wins. The configured
    `version` is used otherwise, unless another release of the same system already carries
    that label: then the system was upgraded under an unchanged config, and a wrong label is
    worse than none.
    """
    if reported:
        return reported
    if not configured:
        return ""
    if any(label == configured for rid, label in others.items() if rid != release):
        return ""
    return configured


# --- which files ---------------------------------------------------------------------------


def guess_type(path: str) -> str:
    ext = posixpath.splitext(path)[1].lower()
    return _TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


_ABSOLUTE = re.compile(rb"/(?:gateway/[\w.-]+\.js|assistserver/sdk/web/[\w./-]+\.\w+)")
_CSS_URL = re.compile(rb"url\(\s*['\"]?([^'\")\s]+)['\"]?\s*\)")
_CSS_IMPORT = re.compile(rb"@import\s+['\"]([^'\"]+)['\"]")
_QUOTED = re.compile(
    rb"['\"]((?:\.{1,2}/)?[\w./-]{1,200}\.(?:js|css|png|gif|jpe?g|svg|woff2?|ttf|json))['\"]"
)


# The patterns above never match across a byte outside [\w./'"-] (CSS's url( and @import
# aside, only used on small style sheets): a script is scanned in windows cut at such bytes.
# 8 KB: ~0.14 ms of regex per window, the longest the loop can wait for the GIL. 32 KB
# (~0.45 ms) plus uvloop's millisecond timer slop still made 1-2 ms stalls (issue 14);
# the scan of a 1 MB script takes 21 ms of CPU instead of 13, in the background thread.
_CUT = re.compile(rb"[^\w./'\"-]")
SCAN_WINDOW = 8 * 1024


def scan_windows(body: bytes) -> Iterator[tuple[int, int]]:
    start, size = 0, len(body)
    while start < size:
        cut = _CUT.search(body, start + SCAN_WINDOW) if start + SCAN_WINDOW < size else None
        end = size if cut is None else cut.start()
        yield start, end
        start = end


def _resolve(base_dir: str, ref: str) -> str | None:
    ref = ref.split("#", 1)[0].split("?", 1)[0]
    if not ref or ":" in ref or ref.startswith("//"):
        return None  # another origin, data: URIs, ...: not ours to store
    joined = ref if ref.startswith("/") else posixpath.join(base_dir, ref)
    normal = posixpath.normpath(joined)
    return normal if is_library_path(normal) else None


def references(path: str, body: bytes, content_type: str) -> set[str]:
    """Library paths a script or style sheet refers to: absolute library paths anywhere,
    `url(...)`/`@import` in CSS and quoted file names in JS (the split `csdk-*.js`, images),
    resolved against the file's directory. Only paths the proxy serves as libraries count.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if not (kind.startswith("text/") or "javascript" in kind or kind == "application/json"):
        return set()
    base_dir = posixpath.dirname(path)
    found: set[str] = set()
    if kind == "text/css":
        candidates = [m.group(0) for m in _ABSOLUTE.finditer(body)]
        candidates += [m.group(1) for m in _CSS_URL.finditer(body)]
        candidates += [m.group(1) for m in _CSS_IMPORT.finditer(body)]
    else:
        # Runs in the background thread (releases/background.py), and a regex holds the GIL
        # for its whole scan: ~10 ms for a 1 MB script, a 10 ms stall of the event loop. In
        # windows of SCAN_WINDOW with a pause between them, the loop gets the GIL back within
        # a fraction of a millisecond (SPEC section 3: no background stall over 1 ms).
        candidates = []
        for start, end in scan_windows(body):
            candidates += [m.group(0) for m in _ABSOLUTE.finditer(body, start, end)]
            candidates += [m.group(1) for m in _QUOTED.finditer(body, start, end)]
            time.sleep(0)  # releases the GIL: a waiting event loop runs now
    for raw in candidates:
        resolved = _resolve(base_dir, raw.decode("ascii", "replace"))
        if resolved is not None and resolved != path:
            found.add(resolved)
    return found


# --- HTTP helpers ------------------------------------------------------------------------


def _parse_accept(accept: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for item in accept.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[name] = q
    return weights


@lru_cache(maxsize=256)
def choose_encoding(accept: str, available: frozenset[str]) -> str:
    """The content coding to send: "br", "gzip" or "" (identity), per RFC 9110 12.5.3.

    Highest q wins, br before gzip on a tie; q=0 refuses; `*` covers unnamed codings.
    Cached: browsers send a handful of distinct header values, so the hot path rarely parses.
    """
    if not accept or not available:
        return ""
    weights = _parse_accept(accept)
    star = weights.get("*", 0.0)
    best, best_q = "", 0.0
    for encoding in ENCODINGS:
        q = weights.get(encoding, star) if encoding in available else 0.0
        if q > best_q:
            best, best_q = encoding, q
    # Identity is acceptable unless refused, but preferred only when listed above the rest.
    return best if best and best_q >= weights.get("identity", 0.0) else ""


def not_modified(if_none_match: str, etag: str) -> bool:
    """If-None-Match with the weak comparison RFC 9110 13.1.2 prescribes for it."""
    value = if_none_match.strip()
    if value == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == bare for candidate in value.split(","))


def expiry(last_active: float, retention_seconds: float) -> float:
    return last_active + retention_seconds


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


# --- what a check of a system found ------------------------------------------------------


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
