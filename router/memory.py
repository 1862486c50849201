"""The C allocator of a worker: give freed memory back instead of keeping it per thread.

A release check compresses ~2 MB of libraries with brotli in worker threads; the encoder's
tables are ~14 MB per file at quality 7. glibc's malloc by default (1) raises its mmap
threshold after the first large free, so later large blocks come from heaps it does not
return to the system, and (2) gives each thread its own arena, so several threads' freed
tables stay resident side by side. Measured on a worker storing both systems' releases:
peak RSS 107 MB, 62 MB once these two settings are made (SPEC section 3: <= 80 MB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("router.memory")

# glibc's mallopt(3) parameter numbers.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Blocks from this size up are mmapped, and unmapped when freed (a fixed value also stops
# glibc from raising the threshold on its own). Above the largest library file: a /v/ answer
# the transport could not write at once is copied into a buffer of about the file's size, and
# at 256 KiB every such copy of a 1 MB file was an mmap + munmap with its page faults, which
# halved release serving (0.40-0.47x nginx static against 0.84-0.94x at 4 MiB, same run
# conditions, `python -m bench --only release`). The brotli tables (~14 MB) are still mmapped.
MMAP_THRESHOLD = 4 * 1024 * 1024
ARENA_MAX = 2


def tune_allocator() -> bool:
    """Apply the two settings where glibc is the allocator; True when they were applied."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_ARENA_MAX, ARENA_MAX)
    )
    if not applied:
        log.debug("mallopt refused the settings; keeping the allocator's defaults")
    return applied
