"""`python -m bench.burst`: a worker's peak RSS under a burst of large gateway answers.

Issue 25: 32-40 concurrent answers of 12-16 MB took one worker from 225 MB to 0.8-1.3 GB
RSS; `max_response_size` bounds one answer, `router.answer_budget` their sum. One bounded
run: a private redis-server, a gateway that answers every request with `--size` bytes, and
one single-worker router per budget measured (a fresh process each, so VmHWM is the peak of
that burst alone), `--clients` concurrent GETs of a library path, each body read and
dropped as it arrives. Reported per budget: peak RSS (VmHWM, KiB) before and after the
burst, answers by status, wall time. Everything it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.procs import Procs, vm_hwm_kib, wait_http, wait_port
from bench.stack import PYTHON, Service, router_config, start_redis, which
from router.sandbox.stack import HOST, free_port

RESULTS = Path(__file__).parent / "results"
LIBRARY_PATH = "/gateway/adapter.js"
MIB = 1024 * 1024


async def serve(port: int, size: int) -> None:
    """The gateway: every request head is answered with `size` bytes and a Content-Length."""
    body = b"x" * size
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\n"
    head += b"Content-Length: %d\r\n\r\n" % size

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(head)
                writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, HOST, port)
    async with server:
        await server.serve_forever()


async def burst(url: str, clients: int) -> tuple[Counter[int], float]:
    statuses: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one() -> None:
            try:
                async with session.get(url) as resp:
                    async for _ in resp.content.iter_chunked(256 * 1024):
                        pass
                    statuses[resp.status] += 1
            except (aiohttp.ClientError, TimeoutError):
                statuses[0] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        return statuses, time.perf_counter() - started


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    procs = Procs(workdir)
    out: dict[str, Any] = {"clients": args.clients, "size_bytes": args.size, "runs": {}}
    try:
        redis_binary = which("redis-server")
        if redis_binary is None:
            raise SystemExit("bench.burst: redis-server is required")
        redis = start_redis(procs, redis_binary, None, workdir)
        port = free_port()
        argv = [PYTHON, "-m", "bench.burst", "--serve", str(port), "--size", str(args.size)]
        gateway = Service(procs.start("big-gateway", argv), port)
        wait_port(port, gateway.proc)
        for budget in args.budgets:
            name = f"router_budget_{budget // MIB}m"
            port, admin_port = free_port(), free_port()
            extra = {
                "max_response_size": max(args.size, 16 * MIB),
                "answer_budget": budget,
                "release_paths": [],
            }
            config = router_config(
                workdir / f"{name}.toml",
                port,
                admin_port,
                redis.port,
                {"a": gateway, "b": gateway},
                extra,
            )
            router_argv = [PYTHON, "-m", "router", "serve", "--config", str(config)]
            router = procs.start(name, [*router_argv, "--workers", "1"])
            wait_http(f"http://{HOST}:{admin_port}/readyz", router)
            wait_port(port, router)
            before = vm_hwm_kib(router.pid)
            statuses, wall = asyncio.run(burst(f"http://{HOST}:{port}{LIBRARY_PATH}", args.clients))
            after = vm_hwm_kib(router.pid)
            procs.stop(router)
            out["runs"][str(budget)] = {
                "answer_budget_mib": budget / MIB,
                "peak_rss_kib_before": before,
                "peak_rss_kib_after": after,
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "wall_s": round(wall, 2),
            }
            print(
                f"[burst] answer_budget {budget / MIB:g} MiB: VmHWM {before} -> {after} KiB,"
                f" statuses {dict(statuses)}, {wall:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        procs.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__)
    parser.add_argument("--clients", type=int, default=40, help="concurrent requests")
    parser.add_argument("--size", type=int, default=14 * MIB, help="bytes per answer")
    parser.add_argument(
        "--budgets",
        type=lambda text: [int(float(v) * MIB) for v in text.split(",")],
        default=[64 * MIB, 4096 * MIB],
        metavar="MIB,...",
        help="answer_budget values to measure, in MiB (default 64 (the default) and 4096,"
        " which no burst reaches: the router as it was before the budget)",
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for burst.json")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve, args.size))
        return 0
    if not 1 <= args.clients <= 200:
        parser.error("--clients: 1 to 200 (a bounded burst)")
    workdir = Path(tempfile.mkdtemp(prefix="token-router-burst-"))
    try:
        result = measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    (args.out / "burst.json").write_bytes(text + b"\n")
    print(text.decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
