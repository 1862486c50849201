"""A child process that dies with its parent, however the parent dies (even SIGKILL).

Linux PR_SET_PDEATHSIG: the kernel sends the child a signal when the parent that forked it
exits. Used for `serve --workers N`'s workers (a supervisor killed with SIGKILL used to leave
its workers serving on the shared port) and for the drill's redis-server and routers
(issue 25). Elsewhere (no prctl) it does nothing; the callers say what else holds then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    function: Callable[..., int] = libc.prctl
    return function


# Resolved once, at import: a child only calls it between fork and exec (no import, no
# lookup, nothing that could wait for a lock another thread held at the fork).
_PRCTL = _prctl()


def die_with(parent: int, sig: int = signal.SIGTERM) -> None:
    """In a child just forked from `parent`: receive `sig` when `parent` dies."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # the parent died between the fork and the prctl
        os.kill(os.getpid(), sig)


def tied_to_this_process(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A subprocess `preexec_fn` that makes the child receive `sig` when this process dies
    (None where the kernel has no such thing)."""
    if _PRCTL is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        die_with(parent, sig)

    return preexec
