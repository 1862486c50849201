"""`python -m bench`: every SPEC section 3 figure, as ratios against references of the same run.

One run, bounded (about 3 minutes with the defaults, under 5 with the wait for a quiet
machine), loopback only. It starts a private redis-server, two simulated systems
(`token-router simulate-gateway`), the routers, the ceiling proxy and nginx, each pinned with
taskset (bench/stack.py), and stops every one of them by PID, whatever happens.

Noise: the machine may be shared. The compared targets are measured in alternating rounds
(direct, ceiling, router, router x2, nginx; then again), so a burst of outside load hits all
of them rather than one; the best round of each is its figure (for latency: the round with
the lowest p99), every round is in the JSON, and every section records how much CPU
processes outside the run used meanwhile (bench/cpu.py). Results: bench/results/latest.*.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import orjson

from bench import report
from bench.harness import Bench
from bench.rows import WARMUP_S, log

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("latency", "throughput", "release", "propagation")
OPT_IN = ("soak",)  # long: only with --only soak


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per row")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk token run")
    parser.add_argument("--file-duration", type=float, default=4.0, help="seconds per file run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (token)")
    parser.add_argument("--file-connections", type=int, default=16, help="wrk connections (file)")
    parser.add_argument("--rate", type=int, default=1000, help="fixed rate of the latency rows")
    parser.add_argument("--latency-duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--switches", type=int, default=50)
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=600.0,
        metavar="S",
        help="length of the soak (--only soak); SPEC asks at least 600",
    )
    parser.add_argument("--seed", type=int, default=1, help="the soak's schedule")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        metavar="S",
        help="wait up to S seconds for other processes to use <10%% CPU (0: do not wait)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        choices=range(0, 20),
        metavar="N",
        help="run everything at niceness -N (root only): a shared machine's other processes "
        "then take little CPU from the measured ones; they run slower meanwhile",
    )
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(SECTIONS),
        metavar="LIST",
        help=f"comma-separated sections to run (default: {','.join(SECTIONS)}; "
        f"opt-in: {','.join(OPT_IN)}, e.g. --only soak)",
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s rows (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.*")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = parser.parse_args(argv)
    known = set(SECTIONS) | set(OPT_IN)
    if not args.only <= known:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(args.only - known))}")
    if args.quick:
        args.rounds = 1
        args.duration = args.latency_duration = args.file_duration = 2.0
        args.switches = 10
        args.wait_quiet = min(args.wait_quiet, 10.0)
    # Estimated length: warm-ups plus rounds of 5 token targets, 4 latency paths, 2 files.
    estimate = 5 * WARMUP_S + 4 * 2 + 2 * WARMUP_S + 30
    estimate += args.rounds * (5 * args.duration + 4 * (args.latency_duration + 1))
    estimate += args.rounds * 2 * args.file_duration + args.switches * 0.1
    if args.only <= set(OPT_IN):
        return args  # the soak is as long as --soak-seconds says
    if estimate + min(args.wait_quiet, 60.0) > 290:
        parser.error(f"about {estimate:.0f} s of measurements: a run must stay under 5 minutes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="token-router-bench-"))
    workdir.chmod(0o755)  # nginx's workers run unprivileged and read the static file here
    bench = Bench(args, workdir)
    # SIGTERM/SIGINT to the harness still stops everything it started (finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        results = bench.run()
    finally:
        bench.procs.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    (args.out / "latest.md").write_text(report.markdown(results), encoding="utf-8")
    log(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    if args.keep or results["errors"]:
        log(f"logs and configs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.markdown(results))
    return 1 if results["errors"] else 0
