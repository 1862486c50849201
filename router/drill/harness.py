"""`token-router drill`: the upgrade procedure rehearsed on this machine, under load.

Two simulated systems (A at library 1.0, B at 2.0) served in this process, a private
redis-server when one is on PATH (with an append-only file, so an injected restart keeps
the data like a production Redis with persistence; else the in-process store), two router
instances on free ports (separate `token-router serve` processes with Redis, in-process with
memory://), steady traffic (traffic.py), and the real `token-router upgrade` procedure to
B while the traffic runs. Faults can be injected on the way (`--inject`).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from router import cancellation
from router.config import Config, build_config
from router.drill.report import FAULTS, Report, Step, Tally
from router.drill.traffic import LIBRARY_PATH, Rotation, Traffic
from router.errors import UsageError
from router.sandbox.children import make_workdir, tied_to_this_process
from router.sandbox.stack import PrivateRedis, SimulatedSystem, free_port, simulated, write_toml
from router.server.run import RouterServer
from router.state.connect import open_store
from router.state.keys import Keys
from router.state.memory_store import MemoryStore
from router.state.rollout import MIN_INTERVAL
from router.state.store import StateStore
from router.upgrade.context import ROLLOUTS, Options
from router.upgrade.journal import Journal, MemoryJournal, open_journal
from router.upgrade.procedure import Procedure

HOST = "127.0.0.1"
SYSTEMS = (("a", "1.0"), ("b", "2.0"))
TARGET = "b"
READY_BOUND = 30.0
# A balancer's deregistration delay: requests already sent to an instance taken out of
# rotation reach it before it stops (real balancers wait seconds; one is enough here).
DEREGISTRATION = 1.0
# After the upgrade ended (the watch's undo seen), answers already on their way to the
# failing system may still fail: that long, not longer.
UNDO_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class DrillOptions:
    duration: float = 30.0
    rate: float = 20.0
    inject: tuple[str, ...] = ()
    memory: bool = False  # use the in-process store even when redis-server is on PATH


def check_inject(names: list[str], *, memory: bool = False) -> tuple[str, ...]:
    """The --inject values, validated before anything starts."""
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if part not in FAULTS:
                raise UsageError(
                    f"--inject: unknown fault {part!r}; choose from {', '.join(FAULTS)}"
                )
            if part == "gateway-fail" and not ROLLOUTS:
                raise UsageError(
                    "--inject gateway-fail: this build has no progressive rollout (issue 10), "
                    "so there is no rollout to abort"
                )
            if part == "gateway-fail-after-promotion" and not ROLLOUTS:
                raise UsageError(
                    "--inject gateway-fail-after-promotion: this build has no progressive "
                    "rollout (issue 10), so there is no promotion to fail after"
                )
            if part == "redis-restart" and (memory or shutil.which("redis-server") is None):
                raise UsageError(
                    "--inject redis-restart needs redis-server on PATH (and no --memory)"
                )
            if part not in out:
                out.append(part)
    if "gateway-fail" in out and "gateway-fail-after-promotion" in out:
        raise UsageError(
            "--inject: gateway-fail aborts the rollout, so there is no promotion for "
            "gateway-fail-after-promotion to fail after; choose one"
        )
    return tuple(out)


# --- parts ---------------------------------------------------------------------------------


class RouterInstance:
    """One router: a `token-router serve` process (Redis) or a RouterServer in this process
    (memory://, which cannot be shared between processes)."""

    def __init__(self, index: int, raw: dict[str, Any], workdir: Path, store: MemoryStore | None):
        self.index = index
        self.raw = raw
        self.config_path = workdir / f"router-{index}.toml"
        self.log_path = workdir / f"router-{index}.log"
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: RouterServer | None = None
        r = raw["router"]
        self.url = "http://" + str(r["listen"])
        self.admin_url = "http://" + str(r["admin_listen"])

    async def start(self) -> None:
        if self.store is not None:
            self.server = RouterServer(build_config(self.raw, {}), store=self.store)
            await self.server.start()
        else:
            write_toml(self.config_path, self.raw)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "router", "serve", "--config", str(self.config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=tied_to_this_process(),  # dies with the drill (children.py)
                )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_BOUND
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                try:
                    async with session.get(self.admin_url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass
                if self.proc is not None and self.proc.poll() is not None:
                    raise UsageError(f"router {self.index} exited at start: see {self._log_tail()}")
                if time.monotonic() > deadline:
                    raise UsageError(f"router {self.index} not ready in {READY_BOUND:g} s")
                await asyncio.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip().splitlines()[-1]
        except (OSError, IndexError):
            return "(no log)"

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


# --- the drill -----------------------------------------------------------------------------


@dataclass
class Drill:
    options: DrillOptions
    out: Callable[[str], None]
    tally: Tally = field(default_factory=Tally)
    faults: list[str] = field(default_factory=list)
    failing: str = ""  # the system failing on purpose right now (gateway-fail)

    async def run(self) -> Report:
        opts = self.options
        async with AsyncExitStack() as stack:
            workdir = make_workdir()
            stack.callback(shutil.rmtree, workdir, True)
            systems = {
                name: await stack.enter_async_context(simulated(name, version))
                for name, version in SYSTEMS
            }
            binary = shutil.which("redis-server")
            redis: PrivateRedis | None = None
            memory: MemoryStore | None = None
            if binary and not opts.memory:
                redis_dir = workdir / "redis"
                redis_dir.mkdir()
                redis = PrivateRedis(binary, redis_dir)
                await redis.start_async()
                stack.push_async_callback(redis.stop_async)
                redis_url = redis.url
                store_text = f"redis-server pid {redis.pid} on {redis_url} (append-only file)"
            else:
                memory = MemoryStore()
                redis_url = "memory://"
                store_text = "in-process memory:// (no redis-server on PATH)"
            secret = secrets.token_urlsafe(18)
            routers = [
                RouterInstance(
                    i + 1,
                    self._raw(systems, redis_url, secret, workdir / f"releases-{i + 1}"),
                    workdir,
                    memory,
                )
                for i in range(2)
            ]
            for router in routers:
                await router.start()
                stack.push_async_callback(router.stop)
            config = build_config(routers[0].raw, {})
            self.out(f"drill: systems a {systems['a'].url} (1.0), b {systems['b'].url} (2.0)")
            self.out(f"drill: store {store_text}")
            self.out("drill: routers " + ", ".join(r.url for r in routers))
            for router in routers:
                await self._wait_releases(router.url, config)
            return await self._exercise(config, systems, routers, redis, memory, store_text)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raw(
        self,
        systems: dict[str, SimulatedSystem],
        redis_url: str,
        secret: str,
        release_dir: Path,
    ) -> dict[str, Any]:
        return {
            "router": {
                "listen": f"{HOST}:{free_port()}",
                "admin_listen": f"{HOST}:{free_port()}",
                "redis_url": redis_url,
                "admin_token": secrets.token_urlsafe(18),
                "preview_secret": secret,
                "access_log": False,
                "log_level": "warning",
                "resync_interval": 0.5,
                # Short: the drain of A waits for its short codes to stop counting; their
                # owner is remembered far longer than the drill lasts.
                "shortcode_ttl": 4,
                "affinity_ttl": 600,
                # The drill's own archive, removed with it (not the operator's).
                "release_dir": str(release_dir),
                # A rehearsal in seconds: the rollout controller and heartbeats tick faster.
                "rollout_tick": 0.2,
                "heartbeat_interval": 0.5,
                "leader_ttl": 1.0,
                # The post-switch watch in seconds too: long enough to judge the traffic,
                # short enough that the upgrade's watch step passes within the drill.
                "post_switch_watch": max(3.0, self.options.duration * 0.2),
                "watch_span": 5.0,
                "watch_min_requests": 10,
                # A busy machine's scheduling is not a slow gateway: only a p99 over
                # 3 x max(a's, 0.5 s) or 2 s breaches.
                "latency_floor": 0.5,
            },
            "systems": {
                name: {
                    "gateway": s.url,
                    "public_url": s.url,
                    "version": s.version,
                    "stats_url": s.url + "/stats",
                }
                for name, s in systems.items()
            },
        }

    async def _wait_releases(self, router: str, config: Config) -> None:
        """Both systems fingerprinted by this router before traffic starts (with memory://
        each router keeps its own release store)."""
        secret = config.router.preview_secret
        assert secret is not None
        deadline = time.monotonic() + READY_BOUND
        async with aiohttp.ClientSession() as session:
            for name, _ in SYSTEMS:
                # Only the idle target through the preview credential: a previewed system is
                # reported "preview", which would hold the old system from "drained".
                headers = {}
                if name == TARGET:
                    headers = {config.router.preview_header: f"{name}:{secret.reveal()}"}
                while True:
                    async with session.get(router + "/router/current", headers=headers) as resp:
                        doc = await resp.json()
                    if doc.get("release"):
                        break
                    if time.monotonic() > deadline:
                        raise UsageError(f"the routers did not fingerprint {name} in time")
                    await asyncio.sleep(0.1)

    async def _exercise(
        self,
        config: Config,
        systems: dict[str, SimulatedSystem],
        routers: list[RouterInstance],
        redis: PrivateRedis | None,
        memory: MemoryStore | None,
        store_text: str,
    ) -> Report:
        opts = self.options
        expected = {name: s.state.files[LIBRARY_PATH][0] for name, s in systems.items()}
        rotation = Rotation([r.url for r in routers])
        traffic = Traffic(rotation, self.tally, expected, provoked=self._provoked)
        r = config.router
        store: StateStore
        journal: Journal
        if memory is not None:
            store, journal = memory, MemoryJournal(memory)
        else:
            store = open_store(
                r.redis_url, Keys(r.key_prefix), timeout=r.redis_timeout, keyspace_events=False
            )
            journal = open_journal(r.redis_url, Keys(r.key_prefix), timeout=r.redis_timeout)
        procedure = Procedure(
            config,
            store,
            journal,
            Options(
                target=TARGET,
                source="drill",
                routers=tuple(rotation.urls),
                steps=(25, 50, 100) if ROLLOUTS else (100,),
                # Each step held at least as long as a rollout may hold one (a second).
                interval=max(MIN_INTERVAL, opts.duration / 8),
                drain_timeout=opts.duration + 30.0,
                drain_interval=0.25,
                offline_old=True,
                yes=True,
            ),
            out=lambda line: self.out(f"upgrade | {line}"),
            err=lambda line: self.out(f"upgrade | {line}"),
        )
        start = time.monotonic()
        until = start + opts.duration
        upgrade_exit: int | None = None
        ended_at = 0.0
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=200)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                faults = asyncio.create_task(
                    self._faults(start, routers, rotation, redis, systems, procedure)
                )
                # The traffic outlasts a fault that runs past the duration (a router restart on
                # a slow machine): cancelled with the traffic's end, it was cut off halfway,
                # its router left stopped, and went unreported.
                load = asyncio.create_task(traffic.run(session, opts.rate, until, hold=faults))
                try:
                    await asyncio.sleep(max(0.5, opts.duration * 0.2))
                    self.out(
                        f"drill: traffic running ({opts.rate:g} sessions/s); upgrading to {TARGET}"
                    )
                    upgrade_exit = await procedure.run()
                    # By now every router applied what the upgrade saw (an undo by the
                    # watch included); answers already on their way get a second.
                    ended_at = time.monotonic() + UNDO_GRACE
                except BaseException:
                    # Ctrl-C (or a crash): stop the traffic and the faults now, not at the end.
                    load.cancel()
                    faults.cancel()
                    await asyncio.gather(load, faults, return_exceptions=True)
                    raise
                await load
                # Done by now (the traffic held on for them); gather, not a suppressed await:
                # a Ctrl-C meanwhile must still end the drill.
                await asyncio.gather(faults, return_exceptions=True)
                cancellation.check()
                self.failing = ""
                await traffic.reload_all(session)
        finally:
            if memory is None:
                await journal.close()
                await store.close()
        self._check_records(traffic, systems)
        by_watch = procedure.outcome == "rolled-back" and any(
            t.step == "watch" for t in procedure.timings
        )
        return Report(
            duration=opts.duration,
            rate=opts.rate,
            store=store_text,
            routers=len(routers),
            inject=opts.inject,
            tally=self.tally,
            steps=[Step(t.step, t.result, t.seconds, t.detail) for t in procedure.timings],
            upgrade_exit=upgrade_exit,
            drain_seconds=procedure.drain_seconds,
            faults=self.faults,
            expect_abort="gateway-fail" in opts.inject,
            aborted="" if by_watch else procedure.rolled_back,
            expect_undo="gateway-fail-after-promotion" in opts.inject,
            undone=procedure.rolled_back if by_watch else "",
            late_failures=self.tally.new_sessions_failed_after(ended_at) if by_watch else 0,
        )

    async def _faults(
        self,
        start: float,
        routers: list[RouterInstance],
        rotation: Rotation,
        redis: PrivateRedis | None,
        systems: dict[str, SimulatedSystem],
        procedure: Procedure,
    ) -> None:
        opts = self.options

        async def at(fraction: float) -> float:
            await asyncio.sleep(max(0.0, start + opts.duration * fraction - time.monotonic()))
            return time.monotonic() - start

        if "gateway-fail" in opts.inject:
            # During the rollout, which is what this fault tests: not before 30 % of the
            # duration, and not before the upgrade started its rollout. At a fixed time only,
            # a slow machine was still in the preview smoke test then: the upgrade stopped
            # there (exit 3) and the rollout it should abort never began.
            await at(0.3)
            while procedure.outcome == "" and not (
                procedure.record is not None and procedure.record.rollout_id
            ):
                await asyncio.sleep(0.05)
            when = time.monotonic() - start
            self.failing = TARGET
            systems[TARGET].state.set_failure(500, None)
            self.faults.append(f"{TARGET}'s gateway answers 500 from {when:.1f} s on")
        if "gateway-fail-after-promotion" in opts.inject:
            # Once the upgrade's switch step is done (the rollout promoted), for as long as
            # the upgrade runs at most: the routers' watch must undo the switch.
            while procedure.outcome == "" and not any(
                t.step == "switch" and t.result == "ok" for t in procedure.timings
            ):
                await asyncio.sleep(0.05)
            if procedure.outcome == "":
                when = time.monotonic() - start
                self.failing = TARGET
                systems[TARGET].state.set_failure(500, None)
                self.faults.append(
                    f"{TARGET}'s gateway answers 500 from {when:.1f} s on (after its promotion)"
                )
                # The traffic holds on until the watch decided (the upgrade ended), however
                # late the promotion came on a slow machine.
                while procedure.outcome == "":
                    await asyncio.sleep(0.05)
        if "redis-restart" in opts.inject and redis is not None:
            when = await at(0.45)
            began = time.monotonic()
            await redis.stop_async()
            await redis.start_async()
            down = (time.monotonic() - began) * 1000
            self.faults.append(f"redis-server restarted at {when:.1f} s (down {down:.0f} ms)")
        if "router-restart" in opts.inject:
            when = await at(0.65)
            victim = routers[-1]
            began = time.monotonic()
            # A balancer's deregistration: out of rotation first, then stopped gracefully.
            rotation.urls = [u for u in rotation.urls if u != victim.url]
            await asyncio.sleep(DEREGISTRATION)
            await victim.stop()
            await victim.start()
            rotation.urls = [*rotation.urls, victim.url]
            took = time.monotonic() - began
            self.faults.append(
                f"router {victim.index} restarted at {when:.1f} s ({took:.1f} s out)"
            )

    def _provoked(self, system: str) -> bool:
        """A failure the injected gateway fault causes on purpose (not counted)."""
        return bool(self.failing) and system == self.failing

    def _check_records(self, traffic: Traffic, systems: dict[str, SimulatedSystem]) -> None:
        """The simulated systems' own records: every token the drill deleted is gone from
        the system that issued it (a DELETE that reached another system left it open)."""
        for sid, owner in traffic.deleted.items():
            if sid in systems[owner].state.sessions:
                self.tally.wrong(f"{owner}'s own records still hold {sid} after its DELETE")
