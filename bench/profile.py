"""Where a router worker spends its time on the token route: py-spy under wrk load.

    pip install py-spy            # a binary wheel from PyPI; not a project dependency
    python -m bench.profile [--seconds 15] [--native] [--out DIR]

Starts the same pieces as `python -m bench` (private Redis, simulated systems, one router
worker pinned to CPU 1, wrk on CPU 0), records the worker with `py-spy record --format raw`
while wrk drives POST /gateway/sessions/session, and prints the functions with the most
samples: "self" (the frame on top of the stack) and "inclusive" (anywhere on the stack).
The raw collapsed stacks are kept next to the summary for flame graphs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.procs import Procs, can_pin, ensure_tool, wait_idle
from bench.stack import Placement, get_json, start_gateway, start_redis, start_router
from bench.wrk import GET_SCRIPT, SESSION_SCRIPT, run_wrk

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def short(frame: str) -> str:
    """'f (/x/site-packages/aiohttp/web_protocol.py:512)' -> 'aiohttp/web_protocol.py:f'."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{m.group('func')}"


def summarize(raw: str, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return total, own.most_common(top), inclusive.most_common(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--route",
        choices=("token", "release"),
        default="token",
        help="token: POST the session description; release: GET the ~1 MB /v/ library file",
    )
    parser.add_argument("--connections", type=int, default=0, help="default 50 / 16 (release)")
    parser.add_argument("--native", action="store_true", help="include C frames (uvloop, ...)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "token-router-profile",
        help="directory for the raw collapsed stacks (flame graph input)",
    )
    args = parser.parse_args(argv)
    py_spy = args.py_spy
    if py_spy is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    notes: list[str] = []
    wrk = ensure_tool("wrk", "wrk", notes)
    redis = ensure_tool("redis-server", "redis-server", notes)
    if wrk is None or redis is None:
        print("wrk and redis-server are required", file=sys.stderr)
        return 2
    place = Placement.choose(can_pin())
    workdir = Path(tempfile.mkdtemp(prefix="token-router-profile-"))
    procs = Procs(workdir)
    raw_path = args.out / f"profile-{args.route}{'-native' if args.native else ''}.txt"
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        redis_service = start_redis(procs, redis, place.rest, workdir)
        gateways = {
            "a": start_gateway(procs, "a", "1.0", place.rest),
            "b": start_gateway(procs, "b", "2.0", place.rest),
        }
        router = start_router(
            procs, "router", workdir, redis_service.port, gateways, workers=1, cpus=place.proxy
        )
        # Let the router finish fingerprinting and compressing the libraries first.
        deadline = time.monotonic() + 20
        while not get_json(router.url + "/router/current").get("base"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        wait_idle([router.proc.pid, *(g.proc.pid for g in gateways.values())])
        if args.route == "token":
            url, script, conns = router.url + "/gateway/sessions/session", SESSION_SCRIPT, 50
        else:
            base = get_json(router.url + "/router/current").get("base")
            if not base:
                print("no release in /router/current: nothing to profile", file=sys.stderr)
                return 1
            url, script, conns = f"{router.url}{base}/gateway/fusion-client-sdk.js", GET_SCRIPT, 16
        conns = args.connections or conns
        run_wrk(wrk, url, script=script, seconds=2, connections=conns, cpus=place.rest)
        record = [py_spy, "record", "--pid", str(router.proc.pid), "--format", "raw"]
        record += ["--rate", str(args.rate), "--duration", str(args.seconds)]
        record += ["--output", str(raw_path)]
        # Non-blocking sampling does not pause the worker; py-spy refuses it with --native.
        record.append("--native" if args.native else "--nonblocking")
        spy_result: list[subprocess.CompletedProcess[str]] = []
        spy = threading.Thread(
            target=lambda: spy_result.append(
                subprocess.run(
                    record, check=False, capture_output=True, text=True, timeout=args.seconds + 60
                )
            )
        )
        spy.start()
        result = run_wrk(
            wrk,
            url,
            script=script,
            seconds=args.seconds,
            connections=conns,
            cpus=place.rest,
        )
        spy.join()
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if not raw_path.is_file():
        done = spy_result[0] if spy_result else None
        print(f"py-spy wrote nothing: {done.stderr if done else 'did not run'}", file=sys.stderr)
        return 1
    total, own, inclusive = summarize(raw_path.read_text(encoding="utf-8"), args.top)
    print(f"wrk under py-spy: {result.rps:.0f} req/s; {total} samples in {raw_path}")
    print(f"\n{'self %':>7}  function")
    for name, count in own:
        print(f"{100 * count / total:7.1f}  {name}")
    print(f"\n{'incl %':>7}  function")
    for name, count in inclusive:
        print(f"{100 * count / total:7.1f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
