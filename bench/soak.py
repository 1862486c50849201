"""`python -m bench --only soak`: zero failed requests over a long, uneven run.

SPEC section 3: at least 10 minutes at 1,000 req/s with idle gaps (connections going stale),
switches under load and a Redis restart in it. The run alternates load segments (20-60 s of
open-loop token requests at `--rate`) with idle gaps of 5-30 s; during load, a bare SET of
`<prefix>:active` flips the active system every 4-10 s; once, in the segment that starts
after half the run, Redis is restarted (stopped, started empty on the same port) under load.
The schedule comes from `--seed`, so a run can be repeated. Every request the generator
sent and did not get a 2xx for is a failure; the router's own /metrics says what it
answered (status 0: no answer from a gateway).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.procs import Procs
from bench.resp import command
from bench.stack import KEY_PREFIX, PYTHON, Redis, Router, get
from bench.stalls import stall_counts, stall_diff

SEGMENT_S = (20.0, 60.0)
GAP_S = (5.0, 30.0)
SWITCH_EVERY_S = (4.0, 10.0)


def router_statuses(router: Router) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in get(router.admin_url + "/metrics").decode().splitlines():
        if line.startswith("tokenrouter_requests_total{"):
            labels, _, value = line.rpartition(" ")
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] += int(float(value))
    return counts


def run(
    *,
    procs: Procs,
    router: Router,
    redis: Redis,
    body_file: Path,
    url: str,
    seconds: float,
    rate: int,
    seed: int,
    cpus: str | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    rng = random.Random(seed)
    started = time.monotonic()
    stalls_before = stall_counts(router)
    statuses_before = router_statuses(router)
    segments: list[dict[str, Any]] = []
    switches = 0
    restarted_at: float | None = None
    active = "a"
    while (left := seconds - (time.monotonic() - started)) > 1.0:
        length = min(rng.uniform(*SEGMENT_S), left)
        argv = [PYTHON, "-m", "bench.loadgen", url, "--rate", str(rate)]
        argv += ["--duration", f"{length:.1f}", "--warmup", "0", "--body-file", str(body_file)]
        seg_start = time.monotonic()
        proc = procs.start(f"soak-loadgen-{len(segments)}", argv, cpus=cpus)
        restart_here = restarted_at is None and seg_start - started >= seconds / 2
        next_switch = seg_start + rng.uniform(*SWITCH_EVERY_S)
        restart_due = seg_start + length / 2 if restart_here else None
        while proc.popen.poll() is None:
            now = time.monotonic()
            if now >= next_switch and now < seg_start + length - 1:
                active = "b" if active == "a" else "a"
                try:
                    command(redis.port, "SET", f"{KEY_PREFIX}:active", active)
                    switches += 1
                except (OSError, RuntimeError) as exc:  # Redis restarting: next time
                    log(f"  switch skipped: {exc}")
                next_switch = now + rng.uniform(*SWITCH_EVERY_S)
            if restart_due is not None and now >= restart_due:
                log("  restarting Redis under load")
                redis.restart()  # on its port, empty
                restarted_at = round(now - started, 1)
                restart_due = None
            time.sleep(0.1)
        procs.stop(proc)
        lines = proc.output().strip().splitlines()
        try:
            result: dict[str, Any] = orjson.loads(lines[-1])
        except (IndexError, orjson.JSONDecodeError):
            raise RuntimeError(f"soak load generator failed: {proc.output()[-2000:]}") from None
        result["started_s"] = round(seg_start - started, 1)
        segments.append(result)
        log(
            f"  segment {len(segments)} at {result['started_s']:.0f} s: {result['sent']} sent, "
            f"{result['failed']} failed, p99 {result['latency_ms'].get('p99', 0):.2f} ms"
        )
        left = seconds - (time.monotonic() - started)
        if left > 1.0:
            gap = min(rng.uniform(*GAP_S), left)
            segments[-1]["idle_after_s"] = round(gap, 1)
            time.sleep(gap)
    # The loop stops when less than a second is left for a segment: idle out the rest, so
    # the soak lasts at least `seconds` (SPEC: at least 10 minutes) and its bar can say so.
    if (left := seconds - (time.monotonic() - started)) > 0:
        time.sleep(left)
    statuses = router_statuses(router) - statuses_before
    errors: Counter[str] = Counter()
    for seg in segments:
        errors.update(seg.get("errors") or {})
        errors.update({k: v for k, v in (seg.get("statuses") or {}).items() if k[:1] != "2"})
    return {
        "seconds": round(time.monotonic() - started, 1),
        "rate": rate,
        "seed": seed,
        "segments": segments,
        "sent": sum(s["sent"] for s in segments),
        "failed": sum(s["failed"] for s in segments),
        "failures_by_kind": dict(errors),
        "router_statuses": dict(statuses),
        "switches": switches,
        "redis_restarted_at_s": restarted_at,
        "idle_gaps_s": [s["idle_after_s"] for s in segments if "idle_after_s" in s],
        "loop_stalls": stall_diff(stalls_before, stall_counts(router)),
    }
