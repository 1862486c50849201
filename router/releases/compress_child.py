"""The compressor child: gzip and brotli forms of the bodies on stdin, on stdout.

    python -I router/releases/compress_child.py BROTLI_QUALITY GZIP_LEVEL

Run by `router.releases.compression`, by path and isolated, so it imports neither the router
package nor anything but the standard library and brotli: it starts in ~30 ms and holds ~10
MB besides brotli's tables. Those tables (~14 MB at quality 7, whatever the file size) are
why it exists: in the worker they would raise its peak RSS past SPEC section 3's 80 MB once
per new release, and glibc keeps part of them after the free.

Frames, both ways: an 8-byte big-endian length, then the bytes. In: the bodies. Out: for
each body in order, its brotli form then its gzip form. Exit 0 after the last frame; any
failure is a traceback on stderr and a non-zero exit, which the parent reports.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys

import brotli  # type: ignore[import-untyped]

LENGTH = 8


def frames(data: bytes) -> list[bytes]:
    out = []
    at = 0
    while at < len(data):
        size = int.from_bytes(data[at : at + LENGTH], "big")
        at += LENGTH
        if at + size > len(data):
            raise ValueError("a truncated frame on stdin")
        out.append(data[at : at + size])
        at += size
    return out


def compress(body: bytes, quality: int, level: int) -> tuple[bytes, bytes]:
    """(brotli, gzip) of `body`; deterministic (gzip without a timestamp). The worker's
    fallback when this child cannot run calls the same function (compression.in_process)."""
    return (
        brotli.compress(body, quality=quality),
        gzip.compress(body, compresslevel=level, mtime=0),
    )


def main(argv: list[str]) -> int:
    quality, level = int(argv[1]), int(argv[2])
    with contextlib.suppress(OSError):
        os.nice(19)  # behind the worker whose core it shares, like background.py's thread
    write = sys.stdout.buffer.write
    for body in frames(sys.stdin.buffer.read()):
        for form in compress(body, quality, level):
            write(len(form).to_bytes(LENGTH, "big"))
            write(form)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
