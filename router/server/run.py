"""Running the router: listeners, signals, graceful stop, and `--workers N` processes.

One worker is one process with both listeners. N workers are N forked processes that bind
the same ports with SO_REUSEPORT (the kernel spreads connections), supervised by the parent:
it forwards SIGTERM/SIGINT, restarts a worker that dies unexpectedly, and exits 0 once
every worker has stopped cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvloop
from aiohttp import web

from router.config import Config, check_listen
from router.errors import ConfigError
from router.logs import AccessLogger, quiet_protocol_errors
from router.metrics import multiprocess_dir
from router.server.addresses import check_distinct_listeners
from router.server.allocator import tune_allocator
from router.server.loop_probe import LoopProbe
from router.server.parent_death import die_with
from router.server.protocol_errors import JsonErrorAppRunner
from router.server.wiring import create_proxy_server, wire
from router.state.store import StateStore

log = logging.getLogger("router.serve")

# A worker that dies more often than this is not restarted: something is wrong that a
# restart loop would only hide (bad certificate, port taken, ...).
RESTART_WINDOW = 60.0
MAX_RESTARTS = 5


def url_of(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@dataclass
class Listeners:
    """The sockets one process serves, once bound (ports resolved when 0 was asked for)."""

    proxy_url: str
    admin_url: str


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    r = config.router
    if not r.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(r.tls_cert, r.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("router.tls_cert", f"cannot load certificate and key: {exc}") from None
    return context


class RouterServer:
    """Both listeners of one process, started and stopped together (wired by wiring.py)."""

    def __init__(
        self, config: Config, *, reuse_port: bool = False, store: StateStore | None = None
    ) -> None:
        self.config = config
        self.reuse_port = reuse_port
        wired = wire(config, store)
        self.runtime = wired.runtime
        r = config.router
        quiet_protocol_errors()
        # aiohttp closes a connection whose keep-alive timer runs out while it waits for a
        # complete request head, so this one timer is both the idle limit and the deadline
        # for a slow (slowloris) request head; a body is bounded by total_timeout (proxy.py).
        self.proxy_runner = web.ServerRunner(
            create_proxy_server(
                wired.runtime,
                wired.proxy,
                access_log_class=AccessLogger,
                access_log=logging.getLogger("router.access") if r.access_log else None,
                keepalive_timeout=r.client_header_timeout,
            ),
            handle_signals=False,
            shutdown_timeout=r.shutdown_timeout,
        )
        self._runtime_started = False
        # The event loop's stalls, measured from before the runtime starts to after it closed.
        self._probe = LoopProbe(self.runtime.metrics.on_loop_stall)
        self.admin_runner = JsonErrorAppRunner(
            wired.admin_app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=2.0,
            keepalive_timeout=r.client_header_timeout,
        )
        self.listeners: Listeners | None = None

    async def start(self, before_listening: Callable[[], None] | None = None) -> Listeners:
        """Start the runtime and both runners, then open the listeners. `before_listening`
        runs in between: the process's one-off work (a full GC pass and freeze, ~20 ms) is
        done before the first request can arrive rather than in its way."""
        r = self.config.router
        check_distinct_listeners(r.listen, r.admin_listen)
        ssl_context = _ssl_context(self.config)
        self._runtime_started = True
        self._probe.start()
        await self.runtime.start()  # the first state read included
        await self.proxy_runner.setup()
        await self.admin_runner.setup()
        if before_listening is not None:
            before_listening()
        host, port = check_listen("router.listen", r.listen)
        admin_host, admin_port = check_listen("router.admin_listen", r.admin_listen)
        sites = (
            web.TCPSite(
                self.proxy_runner,
                host,
                port,
                ssl_context=ssl_context,
                reuse_port=self.reuse_port,
                backlog=1024,
            ),
            web.TCPSite(self.admin_runner, admin_host, admin_port, reuse_port=self.reuse_port),
        )
        for site, key in zip(sites, ("router.listen", "router.admin_listen"), strict=True):
            try:
                await site.start()
            except OSError as exc:
                await self.stop()
                raise ConfigError(key, f"cannot listen on it: {exc.strerror or exc}") from None
        bound_proxy = self.proxy_runner.addresses[0][1]
        bound_admin = self.admin_runner.addresses[0][1]
        self.listeners = Listeners(
            proxy_url=url_of(host, bound_proxy, "https" if ssl_context else "http"),
            admin_url=url_of(admin_host, bound_admin),
        )
        return self.listeners

    async def stop(self) -> None:
        """Graceful: stop accepting, let in-flight requests finish (bounded), close pools.

        With `stop_delay`, the instance first keeps serving while /readyz says 503, so a
        balancer that health-checks it stops sending before the listener closes: closing a
        listener drops connections still in its accept queue, which no balancer can retry
        safely for a POST.
        """
        self.runtime.stopping = True
        delay = self.config.router.stop_delay
        if delay > 0 and self.listeners is not None:
            log.info("not ready any more; serving %.1f s more before closing the listener", delay)
            await asyncio.sleep(delay)
        # The proxy first: aiohttp closes the listening socket and waits up to
        # shutdown_timeout for handlers in flight; then the admin listener (its live feed
        # reads the store); the runtime both used is closed last.
        await self.proxy_runner.cleanup()
        await self.admin_runner.cleanup()
        if self._runtime_started:
            self._runtime_started = False
            self._probe.stop()
            await self.runtime.close()


def tune_gc() -> None:
    """Fewer, cheaper collections on the request path.

    Everything alive after start-up (modules, config, pools) is moved out of the collector's
    sight (`gc.freeze`), and the youngest generation is collected every 20,000 allocations
    instead of 700: a request allocates a few hundred short-lived objects, nearly all freed by
    reference counting, so frequent young collections find almost nothing to do.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def run_until_signalled(
    config: Config,
    *,
    reuse_port: bool = False,
    announce: Callable[[Listeners], None] | None = None,
) -> None:
    server = RouterServer(config, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    listeners = await server.start(before_listening=tune_gc)
    if announce is not None:
        announce(listeners)
    await stop.wait()
    log.info(
        "stopping: no new connections, up to %.0f s for requests in flight",
        config.router.shutdown_timeout,
    )
    started = time.monotonic()
    await server.stop()
    log.info("stopped in %.2f s", time.monotonic() - started)


def run_worker(
    config: Config, *, reuse_port: bool, announce: Callable[[Listeners], None] | None
) -> None:
    tune_allocator()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_until_signalled(config, reuse_port=reuse_port, announce=announce))


def _announce(listeners: Listeners) -> None:
    log.info("proxy listening on %s, admin on %s", listeners.proxy_url, listeners.admin_url)


def serve(config: Config, workers: int = 1) -> int:
    """Run the router until SIGTERM/SIGINT. Returns the process exit status."""
    if workers < 1:
        raise ConfigError("--workers", "must be 1 or more")
    if workers > 1 and config.router.redis_url.startswith("memory://"):
        raise ConfigError(
            "router.redis_url",
            "memory:// lives inside one process; --workers above 1 needs Redis",
        )
    _ssl_context(config)  # a bad certificate is a user error before any fork
    check_distinct_listeners(config.router.listen, config.router.admin_listen)
    if workers == 1:
        run_worker(config, reuse_port=False, announce=_announce)
        return 0
    return Supervisor(config, workers).run()


def _metrics_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges from the shared metrics files (multiprocess mode)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Supervisor:
    """The parent of N workers. Holds no sockets and no event loop of its own."""

    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.children: dict[int, int] = {}  # pid -> worker number
        self.stopping = False
        self.restarts: list[float] = []

    def _spawn(self, number: int) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                # A supervisor killed outright must not leave its workers serving as orphans.
                die_with(supervisor)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                run_worker(
                    self.config, reuse_port=True, announce=_announce if number == 0 else None
                )
            except ConfigError as exc:
                print(f"token-router: error: {exc}", file=sys.stderr, flush=True)
                code = 2
            except BaseException:
                log.exception("worker %d failed", number)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = number
        log.info("worker %d started (pid %d)", number, pid)

    def _forward(self, signum: int, frame: object) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for number in range(self.workers):
            self._spawn(number)
        status = 0
        while self.children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover (PEP 475 retries os.wait)
                continue
            if pid not in self.children:
                continue
            number = self.children.pop(pid)
            _metrics_process_dead(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if self.stopping:
                if code != 0:
                    status = 1
                continue
            if code == 2:  # a user error (port taken, ...): restarting cannot help
                log.error("worker %d (pid %d) could not start; stopping the others", number, pid)
                self._forward(signal.SIGTERM, None)
                status = 2
                continue
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                log.error(
                    "workers keep dying (%d in %.0f s); giving up",
                    len(self.restarts),
                    RESTART_WINDOW,
                )
                self._forward(signal.SIGTERM, None)
                status = 1
                continue
            log.error("worker %d (pid %d) exited with %d; starting a new one", number, pid, code)
            self._spawn(number)
        return status
