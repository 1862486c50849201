"""`token-router drain-wait SYSTEM [--json]`: wait until SYSTEM holds no calls, showing the
deciding count, the rate it falls and an estimate of when it reaches 0 (router/systems/drain.py);
on a timeout, what holds it and what to do. `token-router open-items SYSTEM`: what holds it,
as the routers know it (tokens and short codes with their age and issuing instance)."""

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
    positive_int,
    read_config,
    read_reports,
    shared_store,
    when,
)
from router.config import Config
from router.errors import StoreUnavailable
from router.state.store import StateStore
from router.systems.drain import DrainHistory, describe, format_age, stall_advice
from router.systems.prober import GatewayProber
from router.systems.reports import open_items_view

# How many of the oldest open items drain-wait shows when it times out.
SHOWN_ON_TIMEOUT = 5


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
    q = sub.add_parser(
        "open-items",
        parents=[common],
        help="list what holds SYSTEM open: tokens and short codes, oldest first",
        description="The items the routers count as open on SYSTEM (tokens not deleted, "
        "short codes within shortcode_ttl), oldest first, each with its age and the router "
        "instance that issued it: what to look at when a drain does not end. Where stats_url "
        "is configured the gateway's own count decides drain; this lists what the routers "
        "issued.",
    )
    q.add_argument("system", metavar="SYSTEM")
    q.add_argument(
        "--limit",
        type=positive_int,
        default=50,
        metavar="N",
        help="show at most N items (default 50)",
    )
    q.add_argument("--json", action="store_true", help="the document of the admin API")
    q.set_defaults(func=async_command(open_items_main))


async def open_items_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    store = shared_store(config)
    try:
        doc = await open_items_view(store, config, system, min(args.limit, 1000))
    finally:
        await store.close()
    if args.json:
        print(orjson.dumps(doc).decode())
    else:
        print("\n".join(open_items_lines(doc)))
    return 0


def open_items_lines(doc: dict[str, Any]) -> list[str]:
    items, total = doc["items"], doc["total"]
    lines = [
        f"{doc['system']}: {total} open item{'s' if total != 1 else ''} the routers know"
        " (the gateway's own count decides drain where stats_url answers)"
    ]
    if not items:
        return lines
    width = max(34, *(len(str(i["id"])) for i in items))
    lines.append(f"{'KIND':<8} {'ID':<{width}} {'AGE':<10} ISSUED BY")
    for i in items:
        lines.append(
            f"{i['kind']:<8} {i['id']:<{width}} {format_age(float(i['age'])):<10} "
            f"{i['issuer'] or '(not recorded)'}"
        )
    if total > len(items):
        lines.append(f"... and {total - len(items)} more")
    return lines


async def _timed_out(
    store: StateStore, config: Config, args: argparse.Namespace, system: str
) -> None:
    """On stderr: the oldest items that hold `system` and what to do (docs/upgrades.md)."""
    try:
        doc = await open_items_view(store, config, system, SHOWN_ON_TIMEOUT)
    except StoreUnavailable as exc:
        print(f"  (cannot list the open items: {exc})", file=sys.stderr)
    else:
        for line in open_items_lines(doc):
            print(f"  {line}", file=sys.stderr)
    for line in stall_advice(system, config_hint(args)):
        print(line, file=sys.stderr)


async def drain_wait_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    store = shared_store(config)
    prober = GatewayProber(config.systems)
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
                snapshot, rows = await read_reports(store, config, prober, history)
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
                if not args.json:
                    await _timed_out(store, config, args, system)
                return 1
            await cancellation.sleep(min(args.interval, max(0.0, deadline - now)))
    finally:
        await prober.close()
        await store.close()
