"""`token-router drill`: rehearse `token-router upgrade` on this machine, under load."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson

from router import cancellation
from router.cli.common import Parser, Subcommands, async_command, positive_float
from router.drill.report import FAULTS
from router.errors import UsageError


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "drill",
        parents=[common],
        help="rehearse the upgrade on this machine under load and report what broke",
        description="Start two simulated systems (a at library 1.0, b at 2.0), a private "
        "redis-server (else the in-process store), two routers on free ports, steady "
        "token/short-code/library traffic, and run the upgrade to b while it flows. Prints "
        "requests per kind, failed requests, follow-ups that reached the wrong system, "
        "library loads with another release's bytes, time per step and the drain time. "
        "Exit 0 only when all three error counts are 0.",
    )
    p.add_argument(
        "--duration",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="seconds of traffic (default 30)",
    )
    p.add_argument(
        "--rate",
        type=positive_float,
        default=20.0,
        metavar="R",
        help="new sessions per second, each with a short code, a look-up and a DELETE (default 20)",
    )
    p.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="FAULT",
        help=f"add a fault during the drill (repeatable or comma-separated): {', '.join(FAULTS)}",
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-': stdout)")
    p.add_argument(
        "--memory", action="store_true", help="use the in-process store even with redis-server"
    )
    p.set_defaults(func=async_command(drill_main))


async def drill_main(args: argparse.Namespace) -> int:
    # Imported here: the harness runs routers (router.server.run, prometheus_client), which
    # `serve --workers` must set up before anything imports them.
    from router.drill.harness import Drill, DrillOptions, check_inject

    options = DrillOptions(
        duration=args.duration,
        rate=args.rate,
        inject=check_inject(args.inject, memory=args.memory),
        memory=args.memory,
    )
    if args.json and args.json != "-":
        target = Path(args.json)
        if not target.parent.is_dir():
            raise UsageError(f"--json: directory {target.parent} does not exist")
    try:
        report = await Drill(options, out=lambda line: print(line, flush=True)).run()
    except asyncio.CancelledError:
        if cancellation.requested():
            print(
                "drill: interrupted (Ctrl-C): its systems, routers and redis-server are "
                "stopped; no report (nothing of the drill outlives it: nothing to resume)",
                file=sys.stderr,
            )
        raise
    print()
    for line in report.table():
        print(line)
    if args.json:
        doc = orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode()
        if args.json == "-":
            print(doc)
        else:
            Path(args.json).write_text(doc + "\n", encoding="utf-8")
    sys.stdout.flush()
    return report.exit_code
