"""A drill killed with SIGKILL leaves nothing running, and its temporary directory goes at
the next drill's start (issue 25, item 13). A real drill, killed from outside."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router.sandbox.children import PID_FILE, WORKDIR_PREFIX, remove_stale_workdirs

ENV = {k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")}


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc), children first found by parent PID."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie waits for its reaper only


@pytest.mark.timeout(120)
def test_a_killed_drill_leaves_nothing_running(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "drill", "--duration", "60", "--rate", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**ENV, "TMPDIR": str(tmp_path)},
    )
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("drill: routers "):
                break  # redis-server and both routers run
        assert any("store redis-server pid" in line for line in seen), "".join(seen)
        children = descendants(proc.pid)
        assert len(children) >= 3, children  # redis-server and two routers at least
        (workdir,) = tmp_path.glob(WORKDIR_PREFIX + "*")
        assert (workdir / PID_FILE).read_text().strip() == str(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    deadline = time.monotonic() + 60
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in children if running(pid)]
    for pid in left:  # a failing run must not leave them to the next test either
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, "children outlived the drill"
    # The next drill's start removes what this one left.
    assert workdir.exists()
    assert remove_stale_workdirs(tmp_path) == [workdir]
    assert not workdir.exists()


def test_a_live_drills_directory_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / (WORKDIR_PREFIX + "live")
    mine.mkdir()
    (mine / PID_FILE).write_text(f"{os.getpid()}\n")
    foreign = tmp_path / (WORKDIR_PREFIX + "foreign")
    foreign.mkdir()  # no pid file: not one a drill made, left alone
    assert remove_stale_workdirs(tmp_path) == []
    assert mine.exists() and foreign.exists()
