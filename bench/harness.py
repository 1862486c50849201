"""One run of `python -m bench`, in order: the stack, then every row, then the results
(the command line is bench/cli.py).

A private redis-server and the two simulated systems first; the soak, when asked for, runs
alone on them. Then the compared servers all at once (the fast upstream, the ceiling, the
routers, nginx), the rows that alternate between them, and their stop before switch
propagation starts its own three routers. Every step runs guarded: a failure is recorded in
the results and the run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench import cpu, propagation, report, soak
from bench.procs import (
    Procs,
    can_pin,
    children,
    cpu_seconds,
    ensure_tool,
    vm_hwm_kib,
    wait_idle,
)
from bench.resp import info_stats
from bench.stack import (
    KEY_PREFIX,
    LIBRARY_PATH,
    PYTHON,
    Placement,
    Redis,
    Router,
    Service,
    get,
    start_ceiling,
    start_fast_upstream,
    start_gateway,
    start_nginx,
    start_redis,
    start_router,
    wait_release,
)
from bench.stalls import idle_window, stall_counts, stall_diff
from bench.wrk import GET_SCRIPT, SESSION_SCRIPT, WrkResult, run_wrk
from router.sandbox.stack import HOST

SESSION_PATH = "/gateway/sessions/session"
SESSION_BODY = (
    b'{"webAppId":"webapp-id-example","allowedOrigins":["https://shop.example.com"],'
    b'"timeout":1,"urlSchemeDetails":{"secure":true,"host":"wrong.example.com","port":"8443"}}'
)
WARMUP_S = 2


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.procs = Procs(workdir)
        self.place = Placement.choose(can_pin() and not args.no_pin)
        self.notes: list[str] = []
        self.results: dict[str, Any] = {
            "throughput": {},
            "throughput_rounds": {},
            "latency": {},
            "latency_rounds": {},
            "release": {},
            "release_rounds": {},
            "rss_kib": {},
            "errors": {},
            "cpu": {},
            "loop_stalls": {},
        }
        self.wrk = ""
        self.nginx = ""
        self.targets: dict[str, str] = {}  # throughput row -> base URL
        self.routers: dict[str, Router] = {}
        self.nginx_static = ""

    # --- helpers ------------------------------------------------------------------------

    def guarded(self, name: str, step: Callable[[], None]) -> None:
        """Run one section; a failure is recorded in the results and the run goes on."""
        log(f"{name} ...")
        window = cpu.Window.now(self.running())
        try:
            step()
        except Exception as exc:  # a broken section must not hide the others
            self.results["errors"][name] = f"{exc.__class__.__name__}: {exc}"
            log(f"{name} FAILED: {exc}")
        usage = window.until(cpu.Window.now(self.running()))
        self.results["cpu"][name] = usage
        noisy = usage["foreign_share"] > cpu.NOISY_SHARE
        log(
            f"{name} done in {usage['wall_s']:.1f} s; other processes used "
            f"{usage['foreign_share']:.0%} of the machine" + (" (NOISY)" if noisy else "")
        )

    def running(self) -> list[int]:
        return [proc.pid for proc in self.procs.running]

    def wrk_run(self, url: str, script: Path, connections: int, seconds: float) -> WrkResult:
        return run_wrk(
            self.wrk,
            url,
            script=script,
            seconds=seconds,
            connections=connections,
            cpus=self.place.rest,
        )

    def redis_commands(self) -> int:
        return int(info_stats(self.redis.port, "stats")["total_commands_processed"])

    def fixed_rate(self, base: str, seconds: float, warmup: float) -> dict[str, Any]:
        body = self.workdir / "session.json"
        body.write_bytes(SESSION_BODY)
        argv = [PYTHON, "-m", "bench.loadgen", base + SESSION_PATH, "--rate", str(self.args.rate)]
        argv += ["--duration", str(seconds), "--warmup", str(warmup), "--body-file", str(body)]
        proc = self.procs.start("loadgen", argv, cpus=self.place.rest)
        proc.popen.wait(timeout=seconds + warmup + 30)
        self.procs.stop(proc)
        lines = proc.output().strip().splitlines()
        if proc.popen.returncode != 0 or not lines:
            raise RuntimeError(f"loadgen failed: {proc.output()[-2000:]}")
        result: dict[str, Any] = orjson.loads(lines[-1])
        return result

    # --- the run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.time()
        if self.args.wait_quiet > 0:
            log(f"waiting up to {self.args.wait_quiet:g} s for other processes to go quiet")
            self.results["quiet_wait"] = cpu.wait_quiet(self.args.wait_quiet)
            log(f"  {self.results['quiet_wait']}")
        if self.args.nice:
            # Inherited by every process the run starts: on a machine shared with other
            # sessions' test suites, the measured processes win the CPU most of the time.
            os.nice(-self.args.nice)
            self.notes.append(f"run with niceness -{self.args.nice} (--nice) against others")
        whole = cpu.Window.now(())
        if self.place.rest is not None:
            os.sched_setaffinity(0, {int(self.place.rest)})
        wrk = ensure_tool("wrk", "wrk", self.notes)
        redis = ensure_tool("redis-server", "redis-server", self.notes)
        self.nginx = ensure_tool("nginx", "nginx-light", self.notes) or ""
        if wrk is None or redis is None:
            raise SystemExit("bench: wrk and redis-server are required")
        self.wrk = wrk
        self.redis: Redis = start_redis(self.procs, redis, self.place.rest, self.workdir)
        self.gateways = {
            "a": start_gateway(self.procs, "a", "1.0", self.place.rest),
            "b": start_gateway(self.procs, "b", "2.0", self.place.rest),
        }
        self.library = get(self.gateways["a"].url + LIBRARY_PATH)
        only = self.args.only
        if "soak" in only:
            self.guarded("soak", self.soak)
        if not only - {"soak"}:
            return self.finish(started, whole)

        self.guarded("start", self.start_targets)
        if "latency" in only:
            self.guarded("latency", self.latency)
        if "throughput" in only:
            self.guarded("throughput", self.throughput)
        if "release" in only:
            self.guarded("release", self.release)
        self.guarded("memory", self.memory)
        self.guarded("statuses", self.router_statuses)
        self.stop_targets()
        if "propagation" in only:
            self.guarded("switch propagation", self.propagation)
        return self.finish(started, whole)

    def finish(self, started: float, whole: cpu.Window) -> dict[str, Any]:
        self.procs.close()
        self.results["cpu"]["whole run"] = whole.until(cpu.Window.now(()))
        self.results["ratios"] = report.ratios(self.results)
        self.results["bars"] = report.bars(self.results)
        self.results["notes"] = self.notes
        self.results["pinning"] = {
            "proxy_under_test": self.place.proxy,
            "everything_else": self.place.rest,
            "router_workers_2": self.place.both,
        }
        self.results["settings"] = {
            "rounds": self.args.rounds,
            "duration_s": self.args.duration,
            "connections": self.args.connections,
            "file_connections": self.args.file_connections,
            "rate": self.args.rate,
            "latency_duration_s": self.args.latency_duration,
            "switches": self.args.switches,
            "soak_seconds": self.args.soak_seconds,
            "sections": sorted(self.args.only),
            "nice": -self.args.nice,
            "library_bytes": len(self.library),
        }
        self.results["machine"] = report.machine(self.nginx)
        self.results["command"] = "python -m bench " + shlex.join(sys.argv[1:])
        self.results["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))
        self.results["elapsed_s"] = round(time.time() - started, 1)
        return self.results

    def start_fast_upstream(self) -> Service:
        """The fast upstream (bench/stack.py); without nginx, the simulator stands in (and
        the results say so)."""
        if not self.nginx:
            self.notes.append("no nginx: the throughput rows proxy to the Python simulator")
            return self.gateways["a"]
        return start_fast_upstream(
            self.procs, self.nginx, self.workdir, self.library, self.place.rest
        )

    def start_targets(self) -> None:
        """Every compared server at once: idle ones cost nothing, and rounds can alternate."""
        upstream = self.fast = self.start_fast_upstream()
        self.targets["direct"] = upstream.url
        ceiling = start_ceiling(self.procs, upstream, self.place.proxy)
        self.targets["ceiling"] = ceiling.url
        for name, workers, cpus in (
            ("router_w1", 1, self.place.proxy),
            ("router_w2", 2, self.place.both),
        ):
            router = start_router(
                self.procs,
                name,
                self.workdir,
                self.redis.port,
                {"a": upstream, "b": self.gateways["b"]},
                workers=workers,
                cpus=cpus,
            )
            self.routers[name] = router
            self.targets[name] = router.url
        if self.nginx:
            self.targets["nginx"], self.nginx_static = start_nginx(
                self.procs, self.nginx, self.workdir, upstream.port, self.library, self.place.proxy
            )
        else:
            self.results["errors"]["nginx"] = "nginx not available: its rows are n/a"
        # Each router fetches, fingerprints and (the first one) compresses the libraries
        # after it is ready: wait for a release and for quiet, or that work is measured.
        for router in self.routers.values():
            wait_release(router)
        pids = [r.proc.pid for r in self.routers.values()] + [
            g.proc.pid for g in self.gateways.values()
        ]
        waited = wait_idle(pids)
        self.results["settle_s"] = round(waited, 1)
        log(f"  servers idle after {waited:.1f} s")
        self.idle_stalls()

    def idle_stalls(self) -> None:
        window = idle_window(self.routers["router_w1"])
        self.results["loop_stalls"]["idle: a release check, then background work only"] = window
        log(
            f"  idle router: {window['stalls_over_1ms']} stalls over 1 ms "
            f"(longest <= {window['longest_at_most_ms']} ms)"
        )

    def soak(self) -> None:
        """`--only soak`: a long run against the simulators with gaps, switches, a Redis
        restart (bench/soak.py); one router worker, pinned like the throughput rows."""
        router = start_router(
            self.procs,
            "router_soak",
            self.workdir,
            self.redis.port,
            self.gateways,
            workers=1,
            cpus=self.place.proxy,
        )
        wait_release(router)
        wait_idle([router.proc.pid])
        body = self.workdir / "session.json"
        body.write_bytes(SESSION_BODY)
        try:
            result = soak.run(
                procs=self.procs,
                router=router,
                redis=self.redis,
                body_file=body,
                url=router.url + SESSION_PATH,
                seconds=self.args.soak_seconds,
                rate=self.args.rate,
                seed=self.args.seed,
                cpus=self.place.rest,
                log=log,
            )
            result["peak_rss_kib"] = vm_hwm_kib(router.proc.pid)
            self.results["soak"] = result
            log(
                f"  soak: {result['sent']} sent, {result['failed']} failed, "
                f"{result['switches']} switches, Redis restarted at "
                f"{result['redis_restarted_at_s']} s"
            )
        finally:
            self.procs.stop(router.proc)

    def stop_targets(self) -> None:
        for proc in list(reversed(self.procs.running)):
            if proc.name in ("ceiling", "router_w1", "router_w2"):
                self.procs.stop(proc)
            elif proc.name == "nginx":
                self.procs.stop(proc, signal.SIGQUIT)

    def latency(self) -> None:
        """Direct vs through the router, alternating, at the same fixed rate; the ceiling and
        nginx on the same core as references for what any proxy hop adds on this machine
        (two cross-CPU wake-ups each way, which on a VM cost more than the proxying)."""
        paths = {"direct": self.targets["direct"], "router": self.targets["router_w1"]}
        for reference in ("ceiling", "nginx"):
            if reference in self.targets:
                paths[reference] = self.targets[reference]
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
        router = self.routers["router_w1"]
        before = stall_counts(router)
        for r in range(self.args.rounds):
            for name, base in paths.items():
                warmup = 2.0 if r == 0 else 1.0
                result = self.fixed_rate(base, self.args.latency_duration, warmup)
                rounds[name].append(result)
                lat = result["latency_ms"]
                log(
                    f"  round {r + 1} {name}: p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, "
                    f"{result['failed']} failed"
                )
        self.results["latency_rounds"] = rounds
        self.results["loop_stalls"]["latency rounds at 1000 req/s"] = stall_diff(
            before, stall_counts(router)
        )
        for name, results in rounds.items():
            self.results["latency"][name] = min(results, key=lambda x: x["latency_ms"]["p99"])

    def server_pid(self, name: str) -> int:
        """The process whose CPU time (its own plus its workers') a row's requests cost."""
        if name == "direct":
            return self.fast.proc.pid
        if name in self.routers:
            return self.routers[name].proc.pid
        proc = next(p for p in self.procs.running if p.name == name)
        return proc.pid

    def throughput(self) -> None:
        names = list(self.targets)
        conns = self.args.connections
        for name in names:  # warm-up: connection pools, allocator, caches
            self.wrk_run(self.targets[name] + SESSION_PATH, SESSION_SCRIPT, conns, WARMUP_S)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        router_requests = 0
        router_commands = 0
        for r in range(self.args.rounds):
            for name in names:
                before = self.redis_commands() if name == "router_w1" else 0
                pid = self.server_pid(name)
                cpu_before = cpu_seconds(pid)
                result = self.wrk_run(
                    self.targets[name] + SESSION_PATH, SESSION_SCRIPT, conns, self.args.duration
                )
                row = result.to_json()
                # CPU per request barely moves when others compete for the core, unlike
                # req/s: the steadier of the two figures on a shared machine.
                cost = (cpu_seconds(pid) - cpu_before) / max(1, result.requests)
                row["cpu_us_per_request"] = round(cost * 1e6, 1)
                if name == "router_w1":
                    router_commands += self.redis_commands() - before - 1
                    router_requests += result.requests
                rounds[name].append(row)
                log(
                    f"  round {r + 1} {name}: {result.rps:.0f} req/s, "
                    f"{row['cpu_us_per_request']:.0f} us CPU/req, "
                    f"p99 {result.p99_ms:.2f} ms, {result.errors} errors"
                )
        self.results["throughput_rounds"] = rounds
        for name, results in rounds.items():
            best = dict(max(results, key=lambda x: x["rps"]))
            best["cpu_us_per_request"] = min(x["cpu_us_per_request"] for x in results)
            self.results["throughput"][name] = best
            errors = sum(x["errors"] for x in results)
            if errors:
                self.notes.append(f"{name}: wrk counted {errors} errors")
        if router_requests:
            per_request = router_commands / router_requests
            self.results["redis_commands_per_token_request"] = round(per_request, 3)

    def release(self) -> None:
        router = self.routers["router_w1"]
        base = wait_release(router, timeout=2.0)
        urls: dict[str, str] = {}
        if base:
            urls["router"] = router.url + base + LIBRARY_PATH
            served = get(urls["router"])
            self.results["release"]["url_path"] = base + LIBRARY_PATH
            self.results["release"]["same_bytes_as_gateway"] = served == self.library
        else:
            self.results["release"]["note"] = "n/a: /router/current names no release yet"
            log("  release: n/a (no release base path from /router/current)")
        if self.nginx_static:
            urls["nginx"] = self.nginx_static + LIBRARY_PATH
        conns = self.args.file_connections
        for url in urls.values():
            self.wrk_run(url, GET_SCRIPT, conns, WARMUP_S)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
        for r in range(self.args.rounds):
            for name, url in urls.items():
                result = self.wrk_run(url, GET_SCRIPT, conns, self.args.file_duration)
                rounds[name].append(result.to_json())
                log(
                    f"  round {r + 1} {name}: {result.rps:.0f} req/s, "
                    f"{result.mb_per_s:.0f} MB/s, {result.errors} errors"
                )
        self.results["release_rounds"] = rounds
        for name, results in rounds.items():
            self.results["release"][name] = max(results, key=lambda x: x["rps"])

    def router_statuses(self) -> None:
        """Answers by status code from each router's own /metrics: wrk only counts errors."""
        found: dict[str, dict[str, float]] = {}
        for name, router in self.routers.items():
            text = get(router.admin_url + "/metrics").decode()
            counts: dict[str, float] = {}
            for line in text.splitlines():
                if not line.startswith("tokenrouter_requests_total{"):
                    continue
                labels, _, value = line.rpartition(" ")
                status = labels.split('status="', 1)[1].split('"', 1)[0]
                counts[status] = counts.get(status, 0.0) + float(value)
            found[name] = counts
            odd = {k: v for k, v in counts.items() if k != "200"}
            if odd:
                self.notes.append(f"{name} answered non-200 statuses (from /metrics): {odd}")
        self.results["router_statuses"] = found

    def memory(self) -> None:
        rss = self.results["rss_kib"]
        rss["router_w1"] = vm_hwm_kib(self.routers["router_w1"].proc.pid)
        two = self.routers["router_w2"].proc.pid
        rss["router_w2_workers"] = [vm_hwm_kib(pid) for pid in children(two)]
        rss["router_w2_supervisor"] = vm_hwm_kib(two)

    def propagation(self) -> None:
        routers = [
            start_router(
                self.procs,
                f"router_p{i}",
                self.workdir,
                self.redis.port,
                self.gateways,
                workers=1,
                cpus=self.place.proxy,
            )
            for i in range(3)
        ]
        try:
            # As in production, a switch finds the instances idle: not in the middle of the
            # release fetch, fingerprint and archive a new instance starts with.
            for router in routers:
                wait_release(router)
            settled = wait_idle([r.proc.pid for r in routers])
            self.results["propagation_settle_s"] = round(settled, 1)
            measure = propagation.measure(
                self.redis.port,
                f"{KEY_PREFIX}:active",
                [(HOST, r.port) for r in routers],
                ("a", "b"),
                self.args.switches,
            )
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result = runner.run(measure)
            self.results["propagation"] = result
            last = result["last_instance_ms"]
            assert isinstance(last, dict)
            log(f"  last instance: p50 {last.get('p50'):.3f} ms, p99 {last.get('p99'):.3f} ms")
        finally:
            for r in reversed(routers):
                self.procs.stop(r.proc)
