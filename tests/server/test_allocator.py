"""router/server/allocator.py: the allocator settings a worker applies at start."""

from __future__ import annotations

import platform

import pytest

from router.server.allocator import tune_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_allocator_is_tuned_on_glibc() -> None:
    assert tune_allocator() is True
    assert tune_allocator() is True  # idempotent: every worker calls it once, tests many times
