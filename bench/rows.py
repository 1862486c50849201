"""The rows that measure: each reads what the run has started (`Run`) and writes its figures
into the run's results, in the shape bench/report.py tables.

Token-route throughput and CPU per request (wrk), latency at a fixed rate (bench/loadgen.py),
loop stalls (bench/stalls.py), release serving, peak RSS, the routers' answers by status,
switch propagation (bench/propagation.py) and the soak (bench/soak.py). The compared targets
are measured in alternating rounds; the best round of each is its figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench import propagation as propagation_mod
from bench import soak as soak_mod
from bench.procs import Procs, children, cpu_seconds, vm_hwm_kib, wait_idle
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


@dataclass
class Run:
    """What the rows share: the settings, the run's processes and CPU placement, the stack
    started so far (bench/harness.py starts it) and the results being filled in."""

    args: argparse.Namespace
    workdir: Path
    procs: Procs
    place: Placement
    results: dict[str, Any]
    notes: list[str]
    wrk: str
    redis: Redis
    gateways: dict[str, Service]
    library: bytes  # system a's SDK, as its gateway serves it
    targets: dict[str, str] = field(default_factory=dict)  # throughput row -> base URL
    routers: dict[str, Router] = field(default_factory=dict)
    fast: Service | None = None  # the upstream of the compared targets, once started
    nginx_static: str = ""  # nginx's static server, once started


def wrk_run(run: Run, url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    return run_wrk(
        run.wrk,
        url,
        script=script,
        seconds=seconds,
        connections=connections,
        cpus=run.place.rest,
    )


def redis_commands(run: Run) -> int:
    return int(info_stats(run.redis.port, "stats")["total_commands_processed"])


def fixed_rate(run: Run, base: str, seconds: float, warmup: float) -> dict[str, Any]:
    body = run.workdir / "session.json"
    body.write_bytes(SESSION_BODY)
    argv = [PYTHON, "-m", "bench.loadgen", base + SESSION_PATH, "--rate", str(run.args.rate)]
    argv += ["--duration", str(seconds), "--warmup", str(warmup), "--body-file", str(body)]
    proc = run.procs.start("loadgen", argv, cpus=run.place.rest)
    proc.popen.wait(timeout=seconds + warmup + 30)
    run.procs.stop(proc)
    lines = proc.output().strip().splitlines()
    if proc.popen.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen failed: {proc.output()[-2000:]}")
    result: dict[str, Any] = orjson.loads(lines[-1])
    return result


def idle_stalls(run: Run) -> None:
    """The 1-worker router's loop stalls while idle (bench/stalls.py: the window)."""
    window = idle_window(run.routers["router_w1"])
    run.results["loop_stalls"]["idle: a release check, then background work only"] = window
    log(
        f"  idle router: {window['stalls_over_1ms']} stalls over 1 ms "
        f"(longest <= {window['longest_at_most_ms']} ms)"
    )


def latency(run: Run) -> None:
    """Direct vs through the router, alternating, at the same fixed rate; the ceiling and
    nginx on the same core as references for what any proxy hop adds on this machine
    (two cross-CPU wake-ups each way, which on a VM cost more than the proxying)."""
    paths = {"direct": run.targets["direct"], "router": run.targets["router_w1"]}
    for reference in ("ceiling", "nginx"):
        if reference in run.targets:
            paths[reference] = run.targets[reference]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    router = run.routers["router_w1"]
    before = stall_counts(router)
    for r in range(run.args.rounds):
        for name, base in paths.items():
            warmup = 2.0 if r == 0 else 1.0
            result = fixed_rate(run, base, run.args.latency_duration, warmup)
            rounds[name].append(result)
            lat = result["latency_ms"]
            log(
                f"  round {r + 1} {name}: p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, "
                f"{result['failed']} failed"
            )
    run.results["latency_rounds"] = rounds
    run.results["loop_stalls"]["latency rounds at 1000 req/s"] = stall_diff(
        before, stall_counts(router)
    )
    for name, results in rounds.items():
        run.results["latency"][name] = min(results, key=lambda x: x["latency_ms"]["p99"])


def server_pid(run: Run, name: str) -> int:
    """The process whose CPU time (its own plus its workers') a row's requests cost."""
    if name == "direct" and run.fast is not None:
        return run.fast.proc.pid
    if name in run.routers:
        return run.routers[name].proc.pid
    proc = next(p for p in run.procs.running if p.name == name)
    return proc.pid


def throughput(run: Run) -> None:
    """Token requests as fast as wrk sends them to each target, and their CPU cost."""
    names = list(run.targets)
    conns = run.args.connections
    for name in names:  # warm-up: connection pools, allocator, caches
        wrk_run(run, run.targets[name] + SESSION_PATH, SESSION_SCRIPT, conns, WARMUP_S)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    router_requests = 0
    router_commands = 0
    for r in range(run.args.rounds):
        for name in names:
            before = redis_commands(run) if name == "router_w1" else 0
            pid = server_pid(run, name)
            cpu_before = cpu_seconds(pid)
            result = wrk_run(
                run, run.targets[name] + SESSION_PATH, SESSION_SCRIPT, conns, run.args.duration
            )
            row = result.to_json()
            # CPU per request barely moves when others compete for the core, unlike
            # req/s: the steadier of the two figures on a shared machine.
            cost = (cpu_seconds(pid) - cpu_before) / max(1, result.requests)
            row["cpu_us_per_request"] = round(cost * 1e6, 1)
            if name == "router_w1":
                router_commands += redis_commands(run) - before - 1
                router_requests += result.requests
            rounds[name].append(row)
            log(
                f"  round {r + 1} {name}: {result.rps:.0f} req/s, "
                f"{row['cpu_us_per_request']:.0f} us CPU/req, "
                f"p99 {result.p99_ms:.2f} ms, {result.errors} errors"
            )
    run.results["throughput_rounds"] = rounds
    for name, results in rounds.items():
        best = dict(max(results, key=lambda x: x["rps"]))
        best["cpu_us_per_request"] = min(x["cpu_us_per_request"] for x in results)
        run.results["throughput"][name] = best
        errors = sum(x["errors"] for x in results)
        if errors:
            run.notes.append(f"{name}: wrk counted {errors} errors")
    if router_requests:
        per_request = router_commands / router_requests
        run.results["redis_commands_per_token_request"] = round(per_request, 3)


def release(run: Run) -> None:
    """The router's release of system a's SDK against nginx serving the same bytes."""
    router = run.routers["router_w1"]
    base = wait_release(router, timeout=2.0)
    urls: dict[str, str] = {}
    if base:
        urls["router"] = router.url + base + LIBRARY_PATH
        served = get(urls["router"])
        run.results["release"]["url_path"] = base + LIBRARY_PATH
        run.results["release"]["same_bytes_as_gateway"] = served == run.library
    else:
        run.results["release"]["note"] = "n/a: /router/current names no release yet"
        log("  release: n/a (no release base path from /router/current)")
    if run.nginx_static:
        urls["nginx"] = run.nginx_static + LIBRARY_PATH
    conns = run.args.file_connections
    for url in urls.values():
        wrk_run(run, url, GET_SCRIPT, conns, WARMUP_S)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    for r in range(run.args.rounds):
        for name, url in urls.items():
            result = wrk_run(run, url, GET_SCRIPT, conns, run.args.file_duration)
            rounds[name].append(result.to_json())
            log(
                f"  round {r + 1} {name}: {result.rps:.0f} req/s, "
                f"{result.mb_per_s:.0f} MB/s, {result.errors} errors"
            )
    run.results["release_rounds"] = rounds
    for name, results in rounds.items():
        run.results["release"][name] = max(results, key=lambda x: x["rps"])


def router_statuses(run: Run) -> None:
    """Answers by status code from each router's own /metrics: wrk only counts errors."""
    found: dict[str, dict[str, float]] = {}
    for name, router in run.routers.items():
        # Floats in latest.json, as the exposition format writes counters.
        counts = {k: float(v) for k, v in soak_mod.router_statuses(router).items()}
        found[name] = counts
        odd = {k: v for k, v in counts.items() if k != "200"}
        if odd:
            run.notes.append(f"{name} answered non-200 statuses (from /metrics): {odd}")
    run.results["router_statuses"] = found


def memory(run: Run) -> None:
    """Peak RSS (VmHWM) of the 1-worker router and of each worker of the 2-worker one."""
    rss = run.results["rss_kib"]
    rss["router_w1"] = vm_hwm_kib(run.routers["router_w1"].proc.pid)
    two = run.routers["router_w2"].proc.pid
    rss["router_w2_workers"] = [vm_hwm_kib(pid) for pid in children(two)]
    rss["router_w2_supervisor"] = vm_hwm_kib(two)


def propagation(run: Run) -> None:
    """Three routers of their own on one core, measured once idle (bench/propagation.py)."""
    routers = [
        start_router(
            run.procs,
            f"router_p{i}",
            run.workdir,
            run.redis.port,
            run.gateways,
            workers=1,
            cpus=run.place.proxy,
        )
        for i in range(3)
    ]
    try:
        # As in production, a switch finds the instances idle: not in the middle of the
        # release fetch, fingerprint and archive a new instance starts with.
        for router in routers:
            wait_release(router)
        settled = wait_idle([r.proc.pid for r in routers])
        run.results["propagation_settle_s"] = round(settled, 1)
        measure = propagation_mod.measure(
            run.redis.port,
            f"{KEY_PREFIX}:active",
            [(HOST, r.port) for r in routers],
            ("a", "b"),
            run.args.switches,
        )
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(measure)
        run.results["propagation"] = result
        last = result["last_instance_ms"]
        assert isinstance(last, dict)
        log(f"  last instance: p50 {last.get('p50'):.3f} ms, p99 {last.get('p99'):.3f} ms")
    finally:
        for r in reversed(routers):
            run.procs.stop(r.proc)


def soak(run: Run) -> None:
    """`--only soak`: a long run against the simulators with gaps, switches, a Redis
    restart (bench/soak.py); one router worker, pinned like the throughput rows."""
    router = start_router(
        run.procs,
        "router_soak",
        run.workdir,
        run.redis.port,
        run.gateways,
        workers=1,
        cpus=run.place.proxy,
    )
    wait_release(router)
    wait_idle([router.proc.pid])
    body = run.workdir / "session.json"
    body.write_bytes(SESSION_BODY)
    try:
        result = soak_mod.run(
            procs=run.procs,
            router=router,
            redis=run.redis,
            body_file=body,
            url=router.url + SESSION_PATH,
            seconds=run.args.soak_seconds,
            rate=run.args.rate,
            seed=run.args.seed,
            cpus=run.place.rest,
            log=log,
        )
        result["peak_rss_kib"] = vm_hwm_kib(router.proc.pid)
        run.results["soak"] = result
        log(
            f"  soak: {result['sent']} sent, {result['failed']} failed, "
            f"{result['switches']} switches, Redis restarted at "
            f"{result['redis_restarted_at_s']} s"
        )
    finally:
        run.procs.stop(router.proc)
