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
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import cpu, report, rows
from bench.procs import Procs, can_pin, ensure_tool, wait_idle
from bench.rows import Run, log
from bench.stack import (
    LIBRARY_PATH,
    Placement,
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


class Bench:
    """One run: its settings, work dir, processes and results; `run()` is the order."""

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
        self.nginx = ""

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
        server = start_redis(self.procs, redis, self.place.rest, self.workdir)
        gateways = {
            "a": start_gateway(self.procs, "a", "1.0", self.place.rest),
            "b": start_gateway(self.procs, "b", "2.0", self.place.rest),
        }
        library = get(gateways["a"].url + LIBRARY_PATH)
        run = Run(
            self.args,
            self.workdir,
            self.procs,
            self.place,
            self.results,
            self.notes,
            wrk=wrk,
            redis=server,
            gateways=gateways,
            library=library,
        )
        only = self.args.only
        if "soak" in only:
            self.guarded("soak", partial(rows.soak, run))
        if not only - {"soak"}:
            return self.finish(started, whole, run.library)

        self.guarded("start", partial(self.start_targets, run))
        if "latency" in only:
            self.guarded("latency", partial(rows.latency, run))
        if "throughput" in only:
            self.guarded("throughput", partial(rows.throughput, run))
        if "release" in only:
            self.guarded("release", partial(rows.release, run))
        self.guarded("memory", partial(rows.memory, run))
        self.guarded("statuses", partial(rows.router_statuses, run))
        self.stop_targets()
        if "propagation" in only:
            self.guarded("switch propagation", partial(rows.propagation, run))
        return self.finish(started, whole, run.library)

    def finish(self, started: float, whole: cpu.Window, library: bytes) -> dict[str, Any]:
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
            "library_bytes": len(library),
        }
        self.results["machine"] = report.machine(self.nginx)
        self.results["command"] = "python -m bench " + shlex.join(sys.argv[1:])
        self.results["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))
        self.results["elapsed_s"] = round(time.time() - started, 1)
        return self.results

    def start_fast_upstream(self, run: Run) -> Service:
        """The fast upstream (bench/stack.py); without nginx, the simulator stands in (and
        the results say so)."""
        if not self.nginx:
            self.notes.append("no nginx: the throughput rows proxy to the Python simulator")
            return run.gateways["a"]
        return start_fast_upstream(
            self.procs, self.nginx, self.workdir, run.library, self.place.rest
        )

    def start_targets(self, run: Run) -> None:
        """Every compared server at once: idle ones cost nothing, and rounds can alternate."""
        upstream = run.fast = self.start_fast_upstream(run)
        run.targets["direct"] = upstream.url
        ceiling = start_ceiling(self.procs, upstream, self.place.proxy)
        run.targets["ceiling"] = ceiling.url
        for name, workers, cpus in (
            ("router_w1", 1, self.place.proxy),
            ("router_w2", 2, self.place.both),
        ):
            router = start_router(
                self.procs,
                name,
                self.workdir,
                run.redis.port,
                {"a": upstream, "b": run.gateways["b"]},
                workers=workers,
                cpus=cpus,
            )
            run.routers[name] = router
            run.targets[name] = router.url
        if self.nginx:
            run.targets["nginx"], run.nginx_static = start_nginx(
                self.procs, self.nginx, self.workdir, upstream.port, run.library, self.place.proxy
            )
        else:
            self.results["errors"]["nginx"] = "nginx not available: its rows are n/a"
        # Each router fetches, fingerprints and (the first one) compresses the libraries
        # after it is ready: wait for a release and for quiet, or that work is measured.
        for router in run.routers.values():
            wait_release(router)
        pids = [r.proc.pid for r in run.routers.values()] + [
            g.proc.pid for g in run.gateways.values()
        ]
        waited = wait_idle(pids)
        self.results["settle_s"] = round(waited, 1)
        log(f"  servers idle after {waited:.1f} s")
        rows.idle_stalls(run)

    def stop_targets(self) -> None:
        for proc in list(reversed(self.procs.running)):
            if proc.name in ("ceiling", "router_w1", "router_w2"):
                self.procs.stop(proc)
            elif proc.name == "nginx":
                self.procs.stop(proc, signal.SIGQUIT)
