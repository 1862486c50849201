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
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Blocks from this size up are mmapped, and unmapped when freed (a fixed value also stops
# glibc from raising the threshold on its own). Above the largest library file: a /v/ answer
# the transport could not write at once is copied into a buffer of about the file's size, and
# at 256 KiB every such copy of a 1 MB file was an mmap + munmap with its page faults, which
# halved release serving (0.40-0.47x nginx static against 0.84-0.94x at 4 MiB, same run
# conditions, `python -m bench --only release`). The brotli tables (~14 MB) are still mmapped.
MMAP_THRESHOLD = 4 * 1024 * 1024
# Free memory kept at the top of a heap before it is given back. A fixed mmap threshold also
# fixes this at glibc's 128 KiB, so freeing a 1 MB /v/ write buffer at the top of the heap
# shrank it and the next answer grew it again: ~256 fresh zeroed pages per answer whenever
# the buffer happened to land at the top, and release serving was bimodal from one start to
# the next (~1,650 or ~3,500 req/s, 0.68-1.43x nginx static). At the mmap threshold, what a
# block too small to be mmapped leaves at the top stays. `python -m bench --only release`,
# 2 runs each: 128 KiB bimodal; 2 MiB 1.44-1.46x, 4 MiB 1.39-1.51x, both ~77 MB peak RSS;
# 8 MiB 1.35-1.45x but 78-79 MB.
TRIM_THRESHOLD = MMAP_THRESHOLD
ARENA_MAX = 2


def tune_allocator() -> bool:
    """Apply the three settings where glibc is the allocator; True when they were applied."""
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
    applied = all(
        mallopt(param, value)
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENA_MAX),
        )
    )
    if not applied:
        log.debug("mallopt refused the settings; keeping the allocator's defaults")
    return applied
