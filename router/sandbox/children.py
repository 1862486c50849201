"""The drill's processes die with it, and what a killed drill left behind goes at the next.

A drill stopped by SIGINT or SIGTERM stops its redis-server and routers itself. One killed
with SIGKILL cannot: its children used to run on (a redis-server and two routers holding
ports) with its temporary directory (issue 25). So every child is started tied to the drill
(Linux PR_SET_PDEATHSIG: the kernel sends it SIGTERM when the drill dies, however it dies;
SIGTERM lets a router drain and redis-server exit cleanly), and the temporary directory
names its drill's PID, so the next drill removes the directories of drills that are gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("router.drill")

WORKDIR_PREFIX = "token-router-drill-"
PID_FILE = "drill.pid"
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


# Resolved once, here: the child only calls it between fork and exec (no import, no lookup,
# nothing that could wait for a lock another thread of the drill held at the fork).
_PRCTL = _prctl()


def tied_to_this_process(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive `sig` when this process dies (None where
    the kernel has no such thing: the directory clean-up below still applies)."""
    if _PRCTL is None:
        return None
    prctl = _PRCTL
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the drill died between fork and prctl
            os.kill(os.getpid(), sig)

    return preexec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process now: not ours to judge, keep its directory
    try:
        # A zombie is dead for our purposes (its parent has not reaped it yet).
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def make_workdir() -> Path:
    """A new temporary directory for this drill, naming its PID; the directories of drills
    that died without removing theirs (SIGKILL) are removed first."""
    remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    (workdir / PID_FILE).write_text(f"{os.getpid()}\n", encoding="ascii")
    return workdir


def remove_stale_workdirs(root: Path | None = None) -> list[Path]:
    """Remove `token-router-drill-*` directories (of this user) whose drill is gone."""
    removed = []
    base = Path(tempfile.gettempdir()) if root is None else root
    for path in base.glob(WORKDIR_PREFIX + "*"):
        try:
            if path.stat().st_uid != os.getuid():
                continue
            pid = int((path / PID_FILE).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue  # not one of ours, or one still being made
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left by drill pid %d, which is gone", path, pid)
        removed.append(path)
    return removed
