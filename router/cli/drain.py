"""`token-router drain-wait SYSTEM [--json]`: wait until SYSTEM holds no calls, showing the
deciding count, the rate it falls and an estimate of when it reaches 0 (router/systems/drain.py)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from router import cancellation
from router.cli.common import (
    PROG,
    Parser,
    Subcommands,
    async_command,
    config_hint,
    known_system,
    positive_float,
    read_config,
    read_reports,
    shared_store,
    when,
)
from router.errors import StoreUnavailable
from router.systems.drain import DrainHistory, describe


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "drain-wait",
        parents=[common],
        help="wait until SYSTEM holds no open sessions or short codes",
        description="Print SYSTEM's drain progress (open count, the rate it falls "
        "and an estimate of when it reaches 0) until it holds no calls: its "
        "gateway's own count decides where stats_url is configured, else the "
        "routers' count. Exit 0 when drained, 1 on timeout.",
    )
    p.add_argument("system", metavar="SYSTEM")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=3600.0,
        metavar="S",
        help="give up after S seconds (default 3600)",
    )
    p.add_argument(
        "--interval",
        type=positive_float,
        default=2.0,
        metavar="S",
        help="seconds between checks (default 2)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON document per check (state, counts, rate, eta, result)",
    )
    p.set_defaults(func=async_command(drain_wait_main))


async def drain_wait_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    store = shared_store(config)
    hint = config_hint(args)
    deadline = time.monotonic() + args.timeout
    history = DrainHistory(config.router.drain_stall_after)
    last_line = ""
    last_print = 0.0

    def emit(doc: dict[str, Any], line: str) -> None:
        nonlocal last_line, last_print
        now = time.monotonic()
        if args.json:
            print(orjson.dumps(doc).decode(), flush=True)
        elif line != last_line or now - last_print >= 10:
            print(f"{when(time.time())}  {line}", flush=True)
            last_line, last_print = line, now

    try:
        while True:
            drained = False
            doc: dict[str, Any] = {"time": round(time.time(), 3), "system": system}
            try:
                snapshot, rows = await read_reports(store, config, history)
                d = next(r.drain for r in rows if r.id == system)
                drained = d.drained
                doc.update(d.to_json())
                line = f"{system}: {describe(d)}"
                if snapshot.active == system:
                    line += f" (still active: `{PROG} switch <system>{hint}` first)"
            except StoreUnavailable as exc:
                line = f"{system}: unknown ({exc})"
                doc.update({"state": "unknown", "drained": False, "error": str(exc)})
            now = time.monotonic()
            timed_out = not drained and now >= deadline
            doc["result"] = "drained" if drained else "timeout" if timed_out else "waiting"
            emit(doc, line)
            if drained:
                if not args.json:
                    print(f"{system} is drained: it holds no calls")
                return 0
            if timed_out:
                print(f"{PROG}: timed out after {args.timeout:g} s: {line}", file=sys.stderr)
                return 1
            await cancellation.sleep(min(args.interval, max(0.0, deadline - now)))
    finally:
        await store.close()
