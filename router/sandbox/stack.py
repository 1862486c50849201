"""The local stack, written once: free loopback ports, simulated systems, a private
redis-server and the TOML a router reads. The demo, the drill, the bench and the tests'
helpers stand on it.

Everything binds loopback only, and every child process is tied to this one (children.py):
it gets SIGTERM when we die, even by SIGKILL, and is stopped by its PID otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from aiohttp import web

from router.errors import UsageError
from router.sandbox.children import tied_to_this_process
from router.server.run import url_of
from router.simulator.gateway import (
    SIM_STATE,
    GatewayOptions,
    GatewayState,
    create_gateway_app,
)

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --- simulated systems -----------------------------------------------------------------------


@dataclass
class SimulatedSystem:
    """One simulated system served in this event loop: the demo's, the drill's, the tests'."""

    name: str
    version: str
    runner: web.AppRunner
    url: str

    @property
    def state(self) -> GatewayState:
        return self.runner.app[SIM_STATE]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_simulated(
    name: str, version: str, port: int = 0, options: GatewayOptions | None = None
) -> SimulatedSystem:
    """One simulated system on a loopback port (a free one by default), until `stop()`."""
    runner = web.AppRunner(create_gateway_app(name, version, options), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port, backlog=1024).start()
    except BaseException:
        await runner.cleanup()
        raise
    return SimulatedSystem(name, version, runner, url_of(HOST, runner.addresses[0][1]))


@asynccontextmanager
async def simulated(name: str, version: str) -> AsyncIterator[SimulatedSystem]:
    """One simulated system on a free loopback port, for as long as the context lasts."""
    system = await start_simulated(name, version)
    try:
        yield system
    finally:
        await system.stop()


# --- a private redis-server ------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on a loopback port, stopped by its PID and started again on
    the same port and directory: the demo's, the drill's, the bench's and the tests'.

    With `appendonly` every write is fsynced to an append-only file in `workdir`, so a
    restart, even after SIGKILL, comes back with the data (the drill; the tests' persistent
    server); without it nothing is on disk and a restart comes back empty. `stop()` sends
    `stop_signal`: SIGTERM lets it exit cleanly, SIGKILL is a crash (the tests' outages).
    `port` is a chosen port (a free one by default); `prefix` goes before the command (the
    bench's `taskset -c 0`, which execs redis-server: the PID stays redis-server's); `extra`
    goes after its arguments (`--replicaof ...`); `log` takes its output, else it is dropped.

    Each start ties the process to the thread that starts it (children.py: the kernel sends
    SIGTERM when that thread ends), so start it from a thread that lives as long as it should:
    `start()` in synchronous code, `await start_async()` from the event loop's thread.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        appendonly: bool = True,
        port: int | None = None,
        stop_signal: int = signal.SIGTERM,
        prefix: Sequence[str] = (),
        extra: Sequence[str] = (),
        log: Path | None = None,
    ) -> None:
        self.binary = binary
        self.dir = workdir
        self.appendonly = appendonly
        self.port = free_port() if port is None else port
        self.stop_signal = stop_signal
        self.prefix = tuple(prefix)
        self.extra = tuple(extra)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        durable = ["--appendonly", "yes", "--appendfsync", "always"]
        return [
            *self.prefix,
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            *(durable if self.appendonly else ["--appendonly", "no"]),
            "--dir",
            str(self.dir),
            "--loglevel",
            "warning",
            *self.extra,
        ]

    def start(self) -> None:
        """Start it and return once it answers PING; a start that fails leaves nothing."""
        self._spawn()
        self._wait_ready()

    async def start_async(self) -> None:
        """`start()` without blocking the event loop (the drill's restart runs under load)."""
        self._spawn()  # here, not in a worker thread: the tie is to the starting thread
        await asyncio.to_thread(self._wait_ready)

    def stop(self, sig: int | None = None, timeout: float = 10.0) -> int | None:
        """Send `sig` (default `stop_signal`), wait up to `timeout` s, then SIGKILL; returns
        its exit status (None if it was not running)."""
        proc = self._signal(sig)
        return None if proc is None else _reap(proc, timeout)

    async def stop_async(self, sig: int | None = None, timeout: float = 10.0) -> int | None:
        proc = self._signal(sig)
        return None if proc is None else await asyncio.to_thread(_reap, proc, timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _spawn(self) -> None:
        if self.proc is not None:
            raise UsageError(f"redis-server already runs on port {self.port} (pid {self.pid})")
        with open(self.log, "ab") if self.log is not None else nullcontext() as out:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out if out is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if out is not None else subprocess.DEVNULL,
                preexec_fn=tied_to_this_process(),  # SIGTERM when we die, even by SIGKILL
            )

    def _wait_ready(self, timeout: float = 10.0) -> None:
        proc = self.proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        # Ours answering, not whatever else holds the port (a chosen port can be taken).
        while _server_pid(self.port) != proc.pid:
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise UsageError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def _signal(self, sig: int | None) -> subprocess.Popen[bytes] | None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal if sig is None else sig)
        return proc


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _server_pid(port: int) -> int | None:
    """The PID the redis-server on `port` reports (INFO server), None if none answers."""
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as sock:
            sock.sendall(b"INFO server\r\n")
            reply = b""
            while b"\r\n" not in reply.partition(b"\r\nprocess_id:")[2]:
                chunk = sock.recv(65536)
                if not chunk or len(reply) > 65536:
                    return None
                reply += chunk
    except OSError:
        return None
    line = reply.partition(b"\r\nprocess_id:")[2].split(b"\r\n", 1)[0]
    return int(line) if line.isdigit() else None


@asynccontextmanager
async def private_redis(binary: str) -> AsyncIterator[PrivateRedis]:
    """A throw-away redis-server (no data on disk) for as long as the context lasts."""
    workdir = Path(tempfile.mkdtemp(prefix="token-router-demo-redis-"))
    redis = PrivateRedis(binary, workdir, appendonly=False)
    try:
        await redis.start_async()
        yield redis
    finally:
        await redis.stop_async()
        shutil.rmtree(workdir, ignore_errors=True)


# --- the configuration file ------------------------------------------------------------------


def _plain(value: object) -> object:
    """A path as its text (TOML has no path type), a key set to None left out (nor has it a
    null: the key is unset); tables and arrays looked into."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def toml_text(doc: Mapping[str, Any]) -> str:
    """TOML for a router's configuration (tomli-w): a table inside a table (the systems) a
    `[systems.<id>]` section, strings quoted and escaped as TOML says."""
    plain = _plain(doc)
    assert isinstance(plain, dict)
    return tomli_w.dumps(plain)


def write_toml(path: Path, doc: Mapping[str, Any]) -> None:
    """The configuration file, readable by its owner only (it holds the admin token)."""
    path.write_text(toml_text(doc), encoding="utf-8")
    path.chmod(0o600)
