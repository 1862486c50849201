"""Which request paths are FCSDK library files, unversioned or inside a release.

The one place that knows the library paths' shape: the route table (`routing.classify`)
and the release model (`releases.model`) both ask here; it sits with the route table, below
the releases that use it.
Pure string tests, no imports.
"""

from __future__ import annotations

SDK_PREFIX = "/assistserver/sdk/web/"
RELEASE_PREFIX = "/v/"


def clean(path: str) -> bool:
    """No empty, '.' or '..' segments and no backslash: nothing that could climb out."""
    if "\\" in path or "\x00" in path:
        return False
    segments = path.split("/")[1:]
    return all(segment not in ("", ".", "..") for segment in segments)


def is_library(path: str) -> bool:
    """/gateway/<name>.js or anything under /assistserver/sdk/web/ (cleanliness aside)."""
    if path.startswith("/gateway/") and path.count("/") == 2 and path.endswith(".js"):
        return True
    return path.startswith(SDK_PREFIX) and len(path) > len(SDK_PREFIX)


def is_release(path: str) -> bool:
    """/v/<release>/<library path>."""
    release, _, rest = path[len(RELEASE_PREFIX) :].partition("/")
    return path.startswith(RELEASE_PREFIX) and bool(release) and is_library("/" + rest)


def is_library_path(path: str) -> bool:
    """A path the proxy would route as an (unversioned) library file: clean, under
    /gateway/*.js or /assistserver/sdk/web/."""
    return clean(path) and is_library(path)
