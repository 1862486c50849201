"""`token-router demo`: two simulated systems, the router and the admin page on this machine."""

from __future__ import annotations

import argparse
import os

from router.cli.common import Parser, Subcommands, run_async, tcp_port
from router.logs import setup_logging


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run two simulated systems, the router and the admin page on this machine",
        description="Zero-setup trial: simulated systems A (1.0) and B (2.0), the "
        "router and the admin listener. Uses Redis when --redis-url/REDIS_URL is "
        "given or redis-server is on PATH (started on a free port, stopped on "
        "exit), else the in-process memory:// store. Ctrl-C stops everything.",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="use this Redis instead of starting one",
    )
    p.add_argument("--memory", action="store_true", help="use memory:// even if Redis is at hand")
    p.add_argument("--port", type=tcp_port, default=8080, help="proxy port (default 8080; 0 = any)")
    p.add_argument(
        "--admin-port", type=tcp_port, default=8081, help="admin port (default 8081; 0 = any)"
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from router.sandbox.demo import run_demo

    setup_logging("text", "debug" if args.verbose else "warning")
    return run_async(run_demo(args))
