"""The processes a benchmark run starts: pinned to CPUs, logged to files, stopped by PID.

Every server binds loopback on a port chosen here. Nothing is ever stopped by name: a `Proc`
remembers the PID it started and signals only that PID (and, for `token-router serve
--workers N`, reads that PID's children from /proc to report on them, never to kill them:
the supervisor stops its own workers when it gets SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

# Loopback, as the local stack binds it (router/sandbox/stack.py, which also finds free ports).
from router.sandbox.stack import HOST


def can_pin() -> bool:
    """taskset present and at least two CPUs usable by this process."""
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def pinned(cpus: str | None) -> list[str]:
    """The command prefix that runs a process on `cpus` (none: anywhere). taskset execs the
    command, so the PID a start reports is the benchmarked process's."""
    return ["taskset", "-c", cpus] if cpus is not None else []


class Stoppable(Protocol):
    """One process of a run as `Procs` keeps it: a `Proc`, or the local stack's redis-server
    (bench/stack.py: `Redis`)."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int: ...

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None: ...


class Proc:
    """One started process: argv, its CPU list, its log file and its PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        cpus: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.cpus = cpus
        self.argv = [*pinned(cpus), *argv]
        self.log = log
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal our PID, wait up to `timeout`, then SIGKILL it. Returns the exit status."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()
        return self.popen.returncode


class Procs:
    """Every process of one run, stopped in reverse order of start, whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[Stoppable] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpus: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        proc = Proc(name, argv, log=self.logs / f"{name}.log", cpus=cpus, env=env)
        self.running.append(proc)
        return proc

    def adopt(self, proc: Stoppable) -> None:
        """A process started elsewhere, stopped with the others (and in their order)."""
        self.running.append(proc)

    def stop(self, proc: Stoppable, signum: int = signal.SIGTERM) -> int | None:
        if proc in self.running:
            self.running.remove(proc)
        return proc.stop(signum)

    def close(self) -> None:
        while self.running:
            self.stop(self.running[-1])


def wait_http(url: str, proc: Proc, timeout: float = 20.0, status: int = 200) -> None:
    """Poll `url` until it answers `status`; fail with the process's log if it died."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback)
                if resp.status == status:
                    return
                last = f"status {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: {url} not ready in {timeout:g} s ({last})")
        time.sleep(0.05)


def wait_port(port: int, proc: Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: port {port} not open in {timeout:g} s")
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc), e.g. the workers of `serve --workers N`."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(found)


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size of `pid` in KiB (VmHWM), None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def ensure_tool(binary: str, package: str, log: list[str]) -> str | None:
    """Path of `binary`; installs Debian's `package` with apt-get when it is missing.

    Returns None (the rows that need it become "n/a") when it cannot be installed, e.g. when
    not root. /usr/sbin is searched too: nginx lives there and is not on every user's PATH.
    """
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if path:
        return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log.append(f"{binary} missing and apt-get unavailable to this user: rows need it n/a")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=240)
        if done.returncode != 0 and step[1] == "install":
            log.append(f"apt-get install {package} failed: {done.stderr.strip()[-300:]}")
            return None
    log.append(f"installed Debian package {package} with apt-get")
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its running children (workers)."""
    total = 0.0
    for p in (pid, *children(pid)):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_idle(pids: list[int], share: float = 0.05, timeout: float = 30.0) -> float:
    """Wait until `pids` together use under `share` of one CPU over half a second.

    A router that just started fingerprints and compresses the systems' libraries in the
    background; measuring during that would price start-up work as request handling.
    Returns the seconds waited.
    """
    started = time.monotonic()
    while True:
        before = sum(map(cpu_seconds, pids))
        time.sleep(0.5)
        used = sum(map(cpu_seconds, pids)) - before
        waited = time.monotonic() - started
        if used / 0.5 < share or waited > timeout:
            return waited
