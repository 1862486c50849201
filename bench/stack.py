"""Starting the pieces of a run: Redis, simulated systems, routers, the ceiling, nginx.

Free ports, the private redis-server and the router's TOML are the local stack's
(router/sandbox/stack.py), as for the demo, the drill and the tests; what is the bench's
own is the placement below and that every piece runs as a process of its own.

CPU placement (taskset), when the machine has two CPUs or more:

- CPU 1 (`PROXY_CPU`) belongs to the proxy under test: a router worker, the ceiling proxy or
  nginx's one worker. Nothing else is pinned there while it is measured, so every proxy
  gets the same one core, as in SPEC section 3's calibration ("nginx ... on one core").
- CPU 0 (`REST_CPU`) runs everything else: wrk or the fixed-rate generator, the simulated
  gateways, redis-server and the harness itself. They are the same for every row, so they
  cost every proxy the same.
- `--workers 2` gets both CPUs: its scaling row shows what a second worker buys when it
  has to share the load generator's and the upstream's core.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import nginx
from bench.procs import Proc, Procs, pinned, wait_http, wait_port
from router.sandbox.stack import HOST, PrivateRedis, free_port, write_toml
from router.simulator.library import library_files

PROXY_CPU = "1"
REST_CPU = "0"
BOTH_CPUS = "0,1"
KEY_PREFIX = "benchrouter"
ADMIN_TOKEN = "bench-admin-token"
PYTHON = sys.executable
LIBRARY_PATH = "/gateway/fusion-client-sdk.js"  # system a's SDK: the release rows' file


@dataclass
class Placement:
    proxy: str | None
    rest: str | None
    both: str | None

    @classmethod
    def choose(cls, pin: bool) -> Placement:
        return cls(PROXY_CPU, REST_CPU, BOTH_CPUS) if pin else cls(None, None, None)


@dataclass
class Service:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Router:
    proc: Proc
    port: int
    admin_port: int
    workers: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"


class Redis:
    """The local stack's private redis-server as one of the run's processes: no data on
    disk, pinned by a taskset prefix, its output in redis.log, stopped with the others
    (`Procs`), restarted in place (the soak: same port, back empty)."""

    name = "redis"

    def __init__(self, server: PrivateRedis) -> None:
        self.server = server

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.pid

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        return self.server.stop(signum, timeout)

    def restart(self) -> None:
        self.server.restart()


def start_redis(procs: Procs, binary: str, cpus: str | None, workdir: Path) -> Redis:
    server = PrivateRedis(
        binary, workdir, appendonly=False, prefix=pinned(cpus), log=workdir / "redis.log"
    )
    redis = Redis(server)
    procs.adopt(redis)
    server.start()
    return redis


def start_gateway(procs: Procs, name: str, version: str, cpus: str | None) -> Service:
    port = free_port()
    argv = [PYTHON, "-m", "router", "simulate-gateway", "--name", name, "--version", version]
    argv += ["--host", HOST, "--port", str(port)]
    proc = procs.start(f"gateway-{name}", argv, cpus=cpus)
    wait_http(f"http://{HOST}:{port}/stats", proc)
    return Service(proc, port)


def router_config(
    path: Path,
    port: int,
    admin_port: int,
    redis_port: int,
    gateways: dict[str, Service],
    extra: dict[str, Any] | None = None,
) -> Path:
    """The bench's router.toml: real Redis, no access log (SPEC: measure the proxy).

    Its release archive is new with the run, never the user's: every run then measures a
    router's first start (fetch, compress, archive), the heavier path for peak RSS, and
    repeats no earlier run's state."""
    router = {
        "listen": f"{HOST}:{port}",
        "admin_listen": f"{HOST}:{admin_port}",
        "redis_url": f"redis://{HOST}:{redis_port}/0",
        "key_prefix": KEY_PREFIX,
        "admin_token": ADMIN_TOKEN,
        "access_log": False,
        "log_level": "warning",
        "shutdown_timeout": 2.0,
        "release_dir": str(path.with_name(f"{path.stem}-releases")),
        **(extra or {}),
    }
    systems = {
        name: {"gateway": gateway.url, "public_url": f"https://{name}.example.com:{8443 + i}"}
        for i, (name, gateway) in enumerate(gateways.items())
    }
    write_toml(path, {"router": router, "systems": systems})
    return path


def start_router(
    procs: Procs,
    name: str,
    workdir: Path,
    redis_port: int,
    gateways: dict[str, Service],
    *,
    workers: int,
    cpus: str | None,
) -> Router:
    port, admin_port = free_port(), free_port()
    config = router_config(workdir / f"{name}.toml", port, admin_port, redis_port, gateways)
    argv = [PYTHON, "-m", "router", "serve", "--config", str(config), "--workers", str(workers)]
    proc = procs.start(name, argv, cpus=cpus)
    router = Router(proc, port, admin_port, workers)
    wait_http(router.admin_url + "/readyz", proc)
    wait_port(port, proc)
    return router


def start_ceiling(procs: Procs, upstream: Service, cpus: str | None) -> Service:
    port = free_port()
    argv = [PYTHON, "-m", "bench.ceiling", "--port", str(port), "--upstream", upstream.url]
    proc = procs.start("ceiling", argv, cpus=cpus)
    wait_port(port, proc)
    return Service(proc, port)


def start_fast_upstream(
    procs: Procs, binary: str, workdir: Path, library: bytes, cpus: str | None
) -> Service:
    """nginx answering the token route with a fixed JSON and serving system a's library
    files (the same bytes as the simulator, `library` the SDK's): the upstream of every
    throughput, CPU and latency row, so they measure the proxies and not the Python
    simulator behind them."""
    port = free_port()
    files = {path: body for path, (body, _type) in library_files("1.0").items()}
    conf = nginx.write_fast_upstream(workdir / "fast-upstream", port=port, files=files)
    argv = nginx.argv(binary, workdir / "fast-upstream", conf)
    proc = procs.start("fast-upstream", argv, cpus=cpus)
    wait_port(port, proc)
    fast = Service(proc, port)
    if get(fast.url + LIBRARY_PATH) != library:
        raise RuntimeError("the fast upstream does not serve system a's library bytes")
    return fast


def start_nginx(
    procs: Procs,
    binary: str,
    workdir: Path,
    upstream_port: int,
    library: bytes,
    cpus: str | None,
) -> tuple[str, str]:
    """nginx as the reference: a proxy to `upstream_port`, and `library` as a static file.
    Returns the base URLs of the proxy and of the static server."""
    prefix = workdir / "nginx"
    proxy_port, static_port = free_port(), free_port()
    conf = nginx.write_config(
        prefix,
        upstream_port=upstream_port,
        proxy_port=proxy_port,
        static_port=static_port,
    )
    nginx.put_static(prefix, LIBRARY_PATH, library)
    argv = nginx.argv(binary, prefix, conf)
    proc = procs.start("nginx", argv, cpus=cpus)
    wait_port(proxy_port, proc)
    wait_port(static_port, proc)
    static = f"http://{HOST}:{static_port}"
    if get(static + LIBRARY_PATH) != library:
        raise RuntimeError("nginx does not serve the same library bytes")
    return f"http://{HOST}:{proxy_port}", static


def wait_release(router: Router, timeout: float = 20.0) -> str:
    """The library base path /router/current hands out, once there is one ("" if none)."""
    deadline = time.monotonic() + timeout
    while True:
        base = str(get_json(router.url + "/router/current").get("base") or "")
        if base or time.monotonic() > deadline:
            return base
        time.sleep(0.2)


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
        body: bytes = resp.read()
        return body


def get_json(url: str) -> dict[str, Any]:
    doc = orjson.loads(get(url))
    if not isinstance(doc, dict):
        raise RuntimeError(f"{url} did not answer a JSON object")
    return doc


def which(binary: str) -> str | None:
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
