"""Real parts for tests: a redis-server per test, simulated systems and routers on sockets.

Nothing here is a mock. Every server binds loopback on a free port and is stopped by its
PID (processes) or its runner (in-process apps) when the test ends.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson

from router.config import Config, build_config
from router.sandbox import stack
from router.server.run import RouterServer
from router.state.store import AffinityKind, StateStore

HOST = "127.0.0.1"
# The admin token of router_data's configurations (the operator `admin`), and its header.
ADMIN_TOKEN = "test-admin-token"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Seconds a Redis command may take in tests. Generous: on a loaded machine redis-server can be
# starved for a moment, and a test about something else must not see that as an outage. A
# stopped Redis (what the outage tests do) refuses at once, whatever this is.
REDIS_TIMEOUT = 5.0
SESSION_PATH = "/gateway/sessions/session"
SESSION_BODY: dict[str, Any] = {
    "webAppId": "webapp-id-example",
    "allowedOrigins": ["https://shop.example.com"],
    "timeout": 1,
    "urlSchemeDetails": {"secure": True, "host": "wrong.example.com", "port": "8443"},
}


# A free loopback port, as the sandbox finds one (router/sandbox/stack.py).
free_port = stack.free_port


async def switch(store: StateStore, system: str, source: str, known: Sequence[str]) -> str:
    """A plain audited switch straight on a store (no gates): the system active before."""
    return (await store.change_active(system, source, known)).previous


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll `predicate` until it is true; fail the test with a clear message on timeout.

    The bound is generous on purpose: it only matters when the condition never comes, and
    the suite runs on busy machines. Speed is the benchmark's business, not a test's.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate!r}")
        await asyncio.sleep(interval)


# Release archives of the routers tests start (router_data), removed when the run ends.
ARCHIVE_ROOT = tempfile.mkdtemp(prefix="token-router-test-archives-")
atexit.register(shutil.rmtree, ARCHIVE_ROOT, True)


class RedisServer(stack.PrivateRedis):
    """The sandbox's private redis-server (router/sandbox/stack.py) as tests use it: a free
    loopback port and a temporary directory of its own; stop() is a crash (SIGKILL) and
    start() comes back on the same port and directory.

    `persistent=True` runs it with an append-only file fsynced on every write, so a restart
    (even after SIGKILL) comes back with its data, like the shipped compose.yaml; otherwise
    a restart comes back empty."""

    def __init__(self, persistent: bool = False, extra: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        workdir = Path(tempfile.mkdtemp(prefix="token-router-test-redis-"))
        super().__init__(
            binary, workdir, appendonly=persistent, stop_signal=signal.SIGKILL, extra=extra
        )

    def command(self, *args: str) -> str:
        """A raw RESP command: what `redis-cli` does, with no router code involved."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection((HOST, self.port), timeout=2) as sock:
            sock.sendall(payload)
            reply = sock.recv(65536).decode()
        if reply.startswith("-"):
            raise RuntimeError(reply.strip())
        return reply.strip()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# One simulated system served in the test's event loop (router/sandbox/stack.py).
Gateway = stack.SimulatedSystem
start_gateway = stack.start_simulated


async def issuer_of(store: StateStore, kind: AffinityKind, ident: str) -> str | None:
    """The system the store names as `ident`'s issuer (store.affinity_entry), or None."""
    entry = await store.affinity_entry(kind, ident)
    return None if entry is None else entry[0]


def router_data(redis_url: str, gateways: Mapping[str, Gateway], **router: Any) -> dict[str, Any]:
    """A config document for `gateways`, public URLs distinct from the gateways'."""
    data: dict[str, Any] = {
        "router": {
            "listen": f"{HOST}:0",
            "admin_listen": f"{HOST}:0",
            "redis_url": redis_url,
            "admin_token": ADMIN_TOKEN,
            "access_log": False,
            "resync_interval": 0.5,
            "redis_timeout": REDIS_TIMEOUT,
            # Release checks fetch every library file in the background: they would consume
            # faults injected with /_sim/fail and show in request counts. Off unless a test
            # (tests/releases/test_service.py) passes release_paths.
            "release_paths": [],
            # Each config its own archive directory (removed at exit): tests that share one
            # pass the same release_dir explicitly.
            "release_dir": tempfile.mkdtemp(prefix="archive-", dir=ARCHIVE_ROOT),
            # The post-switch watch would undo a switch whose target a test makes fail on
            # purpose: off unless a test (tests/switching/) turns it on.
            "post_switch_watch": 0,
            **router,
        },
        "systems": {
            name: {
                "gateway": gw.url,
                "public_url": f"https://{name}.example.com:{8443 + i}",
                "version": gw.version,
            }
            for i, (name, gw) in enumerate(gateways.items())
        },
    }
    return data


def make_config(redis_url: str, gateways: Mapping[str, Gateway], **router: Any) -> Config:
    return build_config(router_data(redis_url, gateways, **router), {})


@dataclass
class RunningRouter:
    server: RouterServer
    proxy_url: str
    admin_url: str

    @property
    def active(self) -> str:
        return self.server.runtime.holder.current.active


@dataclass
class RouterFactory:
    routers: list[RunningRouter] = field(default_factory=list)

    async def __call__(self, config: Config) -> RunningRouter:
        server = RouterServer(config)
        listeners = await server.start()
        running = RunningRouter(server, listeners.proxy_url, listeners.admin_url)
        self.routers.append(running)
        return running

    async def close(self) -> None:
        for running in self.routers:
            await running.server.stop()


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    """The config documents above as a file (router/sandbox/stack.py writes it)."""
    stack.write_toml(path, data)
    return path


class RouterProcess:
    """`token-router serve` as a real process (signals, workers, exit status)."""

    def __init__(self, config_path: Path, workers: int = 1, env: Mapping[str, str] | None = None):
        self.config_path = config_path
        self.workers = workers
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.log = config_path.with_suffix(".log")
        self._log: TextIO | None = None

    def start(self) -> None:
        if self._log is not None:
            self._log.close()  # a restart appends to the same log
        self._log = open(self.log, "a", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router",
                "serve",
                "--config",
                str(self.config_path),
                "--workers",
                str(self.workers),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            text=True,
        )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


# How long a freshly started router process may take to answer /readyz 200. One start costs
# about 1 s of CPU (imports, then the state read: 1.0-1.04 s measured per process), but three
# started at once on a 2-core machine whose other core is busy, beside the test process and
# redis-server, took 7-10 s, and a CI machine can be slower still: a bound of 10 or 30 s was
# met on a quiet machine and missed under load. It only matters when a router never starts,
# and stays inside pytest's per-test timeout (60 s) so that this message, not the timeout's
# stack dump, says what failed.
START_TIMEOUT = 45.0


async def wait_ready(admin_url: str, timeout: float = START_TIMEOUT) -> None:
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            try:
                async with session.get(admin_url + "/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, timeout=timeout, interval=0.05)


async def switch_to(redis_server: RedisServer, routers: Sequence[RunningRouter], to: str) -> None:
    """A bare `SET <prefix>:active`, then wait until every router routes to `to`."""
    redis_server.command("SET", "tokenrouter:active", to)
    await wait_until(lambda: all(r.active == to for r in routers))


async def issued_everywhere(*routers: RunningRouter) -> None:
    """Wait until the affinity records the routers made are in Redis.

    They are written behind the answer (router/state/affinity.py): a few milliseconds, but another
    instance asked at once, on a loaded machine, could look before they land.
    """
    for running in routers:
        await running.server.runtime.affinity.flush()


async def new_token(
    http: aiohttp.ClientSession, router: RunningRouter, headers: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """A session token through `router`: (session id, system that issued it)."""
    async with http.post(
        router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY), headers=headers or {}
    ) as resp:
        assert resp.status == 200
        return (await resp.json())["sessionid"], resp.headers["X-Token-Router-System"]


async def new_code(http: aiohttp.ClientSession, router: RunningRouter) -> str:
    """A Live Assist short code through `router`."""
    async with http.put(router.proxy_url + "/assistserver/shortcode/create") as resp:
        assert resp.status == 200
        return str((await resp.json())["shortCode"])


async def states_of(http: aiohttp.ClientSession, router: RunningRouter) -> dict[str, Any]:
    """{system: (state, open items)} from the router's /api/status."""
    async with http.get(router.admin_url + "/api/status", headers=ADMIN_AUTH) as resp:
        doc: dict[str, Any] = await resp.json()
    return {s["id"]: (s["state"], s["open"]) for s in doc["systems"]}
