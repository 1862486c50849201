"""The drill's processes die with it, and what a killed drill left behind goes at the next.

A drill stopped by SIGINT or SIGTERM stops its redis-server and routers itself. One killed
with SIGKILL cannot: its children used to run on (a redis-server and two routers holding
ports) with its temporary directory (issue 25). So every child is started tied to the drill
(`tied_to_this_process`, server/parent_death.py: the kernel sends it SIGTERM when the drill
dies, however it dies; SIGTERM lets a router drain and redis-server exit cleanly), and the
temporary directory names its drill's PID, so the next drill removes the directories of
drills that are gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from router.server.parent_death import tied_to_this_process

log = logging.getLogger("router.drill")
__all__ = [
    "PID_FILE",
    "WORKDIR_PREFIX",
    "make_workdir",
    "remove_stale_workdirs",
    "tied_to_this_process",
]

WORKDIR_PREFIX = "token-router-drill-"
PID_FILE = "drill.pid"


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
