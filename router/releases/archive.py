"""The durable on-disk archive of release bytes (`release_dir`): what puts releases back into
a Redis that came back empty, and what an instance serves from when Redis does not know a
release.

Content-addressed and written atomically:
    <release_dir>/blobs/<sha256>            the bytes of one representation (identity, gzip, br)
    <release_dir>/releases/<release>.json   the release's metadata and, per file and
                                            encoding, the digest of its blob
A file is written to a temporary name in the same directory, flushed to disk and renamed,
so a crash leaves either the old state or the new one. Every blob is checked against its
digest when read: a corrupted or truncated file is skipped with a warning and never served.
Bounded by the retention: releases past their expiry, and blobs no release names, are
removed by `prune`. Several instances may share one directory (same bytes, same names).

Plain blocking file I/O: the release service calls it in its background thread
(router/releases/background.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from router.errors import ConfigError
from router.releases.model import FileEntry, LibraryFile, ReleaseMeta, valid_release_id

log = logging.getLogger("router.archive")

HEX = frozenset("0123456789abcdef")
TOUCH_SLACK = 3600.0  # seconds of expiry a touch must add before the manifest is rewritten
ORPHAN_AGE = 3600.0  # seconds an unreferenced blob is kept (an instance may be mid-save)


def default_release_dir(environ: Mapping[str, str]) -> Path:
    """Where the archive lives when `release_dir` is not set: the user's state directory."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "token-router" / "releases"


def check_writable(directory: Path, key: str = "router.release_dir") -> None:
    """Create the directory if needed and prove a file can be written there; ConfigError
    naming `key` otherwise (an unwritable archive would lose releases silently)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            key, f"{str(directory)!r} is not a writable directory ({exc.strerror or exc})"
        ) from None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _meta_json(meta: ReleaseMeta, blobs: Mapping[str, Mapping[str, str]]) -> bytes:
    doc = {
        "id": meta.id,
        "digest": meta.digest,
        "label": meta.label,
        "files": [entry.to_json() for entry in meta.files.values()],
        "created": meta.created,
        "last_active": meta.last_active,
        "last_system": meta.last_system,
        "systems": list(meta.systems),
        "expires": meta.expires,
        "blobs": {path: dict(forms) for path, forms in blobs.items()},
    }
    return orjson.dumps(doc)


@dataclass(frozen=True, slots=True)
class Archived:
    meta: ReleaseMeta
    blobs: Mapping[str, Mapping[str, str]]  # path -> encoding ("" = identity) -> sha256


def _parse(raw: bytes) -> Archived:
    doc: dict[str, Any] = orjson.loads(raw)
    files = {e.path: e for e in (FileEntry.from_json(row) for row in doc["files"])}
    meta = ReleaseMeta(
        id=str(doc["id"]),
        digest=str(doc["digest"]),
        label=str(doc["label"]),
        files=files,
        created=float(doc["created"]),
        last_active=float(doc["last_active"]),
        last_system=str(doc["last_system"]),
        systems=tuple(str(s) for s in doc["systems"]),
        expires=float(doc["expires"]),
    )
    blobs = {
        str(p): {str(e): str(d) for e, d in forms.items()} for p, forms in doc["blobs"].items()
    }
    for path in files:
        if "" not in blobs.get(path, {}):
            raise ValueError(f"no identity blob for {path}")
    return Archived(meta, blobs)


class ReleaseArchive:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs = directory / "blobs"
        self.manifests = directory / "releases"

    def open(self) -> None:
        """Create the layout (raises ConfigError naming release_dir when not writable)."""
        check_writable(self.directory)
        self.blobs.mkdir(exist_ok=True)
        self.manifests.mkdir(exist_ok=True)

    def _manifest(self, release: str) -> Path:
        return self.manifests / f"{release}.json"

    def has(self, release: str) -> bool:
        return valid_release_id(release) and self._manifest(release).is_file()

    def save(self, meta: ReleaseMeta, files: Mapping[str, Mapping[str, bytes]]) -> None:
        """Store a release: `files` maps path -> encoding ("" = identity) -> bytes. Blobs
        first, the manifest last: a manifest on disk always names blobs that exist."""
        blobs: dict[str, dict[str, str]] = {}
        for path, forms in files.items():
            for encoding, data in forms.items():
                digest = hashlib.sha256(data).hexdigest()
                target = self.blobs / digest
                if not target.is_file():
                    _atomic_write(target, data)
                blobs.setdefault(path, {})[encoding] = digest
        missing = [p for p in meta.files if "" not in blobs.get(p, {})]
        if missing:
            raise ValueError(f"release {meta.id} is missing the bytes of {', '.join(missing)}")
        _atomic_write(self._manifest(meta.id), _meta_json(meta, blobs))

    def _read(self, release: str) -> Archived | None:
        """The manifest, or None (absent, or corrupted: warned and skipped)."""
        if not valid_release_id(release):
            return None
        try:
            raw = self._manifest(release).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("release archive: cannot read release %s: %s; skipped", release, exc)
            return None
        try:
            archived = _parse(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "release archive: manifest of release %s is corrupted (%s); skipped", release, exc
            )
            return None
        if archived.meta.id != release:
            log.warning(
                "release archive: manifest %s names release %s; skipped", release, archived.meta.id
            )
            return None
        return archived

    def meta(self, release: str, now: float) -> ReleaseMeta | None:
        archived = self._read(release)
        if archived is None or archived.meta.expires <= now:
            return None
        return archived.meta

    def _blob(self, release: str, path: str, digest: str) -> bytes | None:
        """The bytes of one blob, only if they match their digest."""
        if len(digest) != 64 or not set(digest) <= HEX:
            return None
        try:
            data = (self.blobs / digest).read_bytes()
        except OSError as exc:
            log.warning(
                "release archive: %s%s of release %s unreadable (%s); skipped",
                "",
                path,
                release,
                exc,
            )
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            log.warning(
                "release archive: blob %s (%s of release %s) does not match its digest; "
                "skipped, never served",
                digest[:16],
                path,
                release,
            )
            return None
        return data

    def file(self, release: str, path: str, now: float) -> dict[str, bytes]:
        """encoding -> bytes of one file, digest-checked; {} when unknown or corrupted (a bad
        compressed form is dropped, the identity bytes are required)."""
        archived = self._read(release)
        if archived is None or archived.meta.expires <= now or path not in archived.meta.files:
            return {}
        out: dict[str, bytes] = {}
        for encoding, digest in archived.blobs.get(path, {}).items():
            data = self._blob(release, path, digest)
            if data is not None:
                out[encoding] = data
        entry = archived.meta.files[path]
        if "" not in out or hashlib.sha256(out[""]).hexdigest() != entry.sha256:
            return {}
        return out

    def load(self, release: str, now: float) -> tuple[ReleaseMeta, list[LibraryFile]] | None:
        """A whole unexpired release with every file checked, or None (skipped with a warning
        when anything in it is corrupted: a partial release is never put back)."""
        archived = self._read(release)
        if archived is None or archived.meta.expires <= now:
            return None
        files = []
        for path, entry in archived.meta.files.items():
            forms = self.file(release, path, now)
            if not forms:
                log.warning(
                    "release archive: release %s has a missing or corrupted file %s; not restored",
                    release,
                    path,
                )
                return None
            identity = forms.pop("")
            files.append(LibraryFile(path, entry.content_type, identity, forms))
        return archived.meta, files

    def releases(self, now: float) -> list[str]:
        """Ids of the unexpired releases archived here (manifests that parse)."""
        out = []
        for manifest in sorted(self.manifests.glob("*.json")):
            meta = self.meta(manifest.stem, now)
            if meta is not None:
                out.append(meta.id)
        return out

    def touch(self, release: str, expires: float, last_active: float, system: str) -> None:
        """Move a release's expiry forward (it is still served)."""
        archived = self._read(release)
        # Called on every release check: rewrite the manifest only when it gains an hour.
        if archived is None or expires - archived.meta.expires < TOUCH_SLACK:
            return
        meta = archived.meta
        systems = meta.systems if system in meta.systems else (*meta.systems, system)
        fresh = ReleaseMeta(
            meta.id,
            meta.digest,
            meta.label,
            meta.files,
            meta.created,
            max(meta.last_active, last_active),
            system or meta.last_system,
            systems,
            expires,
        )
        _atomic_write(self._manifest(release), _meta_json(fresh, archived.blobs))

    def prune(self, now: float) -> int:
        """Remove expired releases and blobs no kept release names; returns files removed."""
        removed = 0
        keep: set[str] = set()
        for manifest in self.manifests.glob("*.json"):
            archived = self._read(manifest.stem)
            if archived is None or archived.meta.expires <= now:
                # Expired, or corrupted beyond use: nothing would ever serve it.
                with contextlib.suppress(FileNotFoundError):
                    manifest.unlink()
                    removed += 1
                continue
            for forms in archived.blobs.values():
                keep.update(forms.values())
        for blob in self.blobs.iterdir():
            if blob.name in keep or blob.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                # A blob of a release another instance is saving right now has no manifest
                # yet (blobs are written first): only old orphans go.
                if blob.stat().st_mtime > now - ORPHAN_AGE:
                    continue
                blob.unlink()
                removed += 1
        return removed
