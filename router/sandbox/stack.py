"""The local stack, written once: free loopback ports, simulated systems, a private
redis-server and the TOML a router reads. The demo and the drill stand on it.

Everything binds loopback only, and every child process is tied to this one (children.py):
it gets SIGTERM when we die, even by SIGKILL, and is stopped by its PID otherwise.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from router.errors import UsageError
from router.sandbox.children import tied_to_this_process
from router.server.run import url_of
from router.simulator.gateway import SIM_STATE, GatewayState, create_gateway_app

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
    name: str
    version: str
    runner: web.AppRunner
    url: str

    @property
    def state(self) -> GatewayState:
        return self.runner.app[SIM_STATE]


@asynccontextmanager
async def simulated(name: str, version: str) -> AsyncIterator[SimulatedSystem]:
    """One simulated system on a free loopback port, for as long as the context lasts."""
    runner = web.AppRunner(create_gateway_app(name, version), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, 0, backlog=1024).start()
        yield SimulatedSystem(name, version, runner, url_of(HOST, runner.addresses[0][1]))
    finally:
        await runner.cleanup()


# --- a private redis-server ------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on a free port. With `appendonly` (the drill) every write is
    on disk and a restart keeps port and data; without (the demo) nothing is. Stopped by PID."""

    def __init__(self, binary: str, workdir: Path, *, appendonly: bool = True) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = workdir
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    async def start(self) -> None:
        durable = ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(
            [
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=tied_to_this_process(),  # SIGTERM when we die, even by SIGKILL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
                writer.close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise UsageError(f"redis-server did not start on port {self.port}") from None
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0


@asynccontextmanager
async def private_redis(binary: str) -> AsyncIterator[PrivateRedis]:
    """A throw-away redis-server (no data on disk) for as long as the context lasts."""
    workdir = Path(tempfile.mkdtemp(prefix="token-router-demo-redis-"))
    redis = PrivateRedis(binary, workdir, appendonly=False)
    try:
        await redis.start()
        yield redis
    finally:
        await redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- the configuration file ------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_text(doc: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML for a router's configuration: each key a table, a table inside a table (the
    systems) a `[systems.<id>]` section."""
    lines: list[str] = []

    def table(name: str, values: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, Mapping)}
        if scalars or not values:
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
            lines.append("")
        for key, value in values.items():
            if isinstance(value, Mapping):
                table(f"{name}.{key}", value)

    for name, values in doc.items():
        table(name, values)
    return "\n".join(lines)


def write_toml(path: Path, doc: Mapping[str, Mapping[str, Any]]) -> None:
    """The configuration file, readable by its owner only (it holds the admin token)."""
    path.write_text(toml_text(doc), encoding="utf-8")
    path.chmod(0o600)
