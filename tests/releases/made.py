"""Releases made for tests the way a check makes them (`checker.new_release`), stored or not."""

from __future__ import annotations

import time
from collections.abc import Sequence

from router.releases.checker import new_release
from router.releases.model import LibraryFile, ReleaseMeta, release_digest, release_id


def made_release(files: Sequence[LibraryFile], label: str = "", system: str = "a") -> ReleaseMeta:
    """The meta a check would store for `files` served by `system`, expiring in an hour."""
    entries = [f.entry() for f in files]
    now = time.time()
    rid = release_id(release_digest(entries))
    return new_release(rid, label, system, files, entries, now=now, expires=now + 3600)
