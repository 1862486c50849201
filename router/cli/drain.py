"""`token-router drain-wait SYSTEM`: wait until SYSTEM holds nothing the routers issued."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

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


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "drain-wait",
        parents=[common],
        help="wait until SYSTEM holds no open sessions or short codes",
        description="Print SYSTEM's drain progress until nothing the routers "
        "issued on it is open (and its stats_url, if configured, agrees). Exit "
        "0 when drained, 1 on timeout.",
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
    p.set_defaults(func=async_command(drain_wait_main))


async def drain_wait_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    store = shared_store(config)
    hint = config_hint(args)
    deadline = time.monotonic() + args.timeout
    last_line = ""
    last_print = 0.0
    try:
        while True:
            try:
                snapshot, rows, _ = await read_reports(store, config)
                row = next(r for r in rows if r.id == system)
                line = f"{system}: {row.state}, {'?' if row.open is None else row.open} open"
                if snapshot.active == system:
                    line += f" (still active: `{PROG} switch <system>{hint}` first)"
            except StoreUnavailable as exc:
                row = None
                line = f"{system}: unknown ({exc})"
            now = time.monotonic()
            if line != last_line or now - last_print >= 10:
                print(f"{when(time.time())}  {line}", flush=True)
                last_line, last_print = line, now
            if row is not None and row.state in ("drained", "offline") and row.open == 0:
                print(f"{system} is drained: nothing the router issued is open on it")
                return 0
            if now >= deadline:
                print(
                    f"{PROG}: timed out after {args.timeout:g} s: {line}",
                    file=sys.stderr,
                )
                return 1
            await asyncio.sleep(min(args.interval, max(0.0, deadline - now)))
    finally:
        await store.close()
