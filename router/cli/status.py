"""`token-router status`: the active system, each system's drain state, recent switches."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from router.cli.common import (
    EXIT_REFUSED_VALUE,
    Parser,
    Subcommands,
    async_command,
    audit_line,
    read_config,
    read_reports,
    shared_store,
)
from router.keys import Keys
from router.state import Snapshot


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "status", parents=[common], help="show the active system, drain state and recent switches"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=async_command(status_main))


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


async def status_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    store = shared_store(config)
    try:
        snapshot, rows = await read_reports(store, config)
        entries = await store.audit(5)
    finally:
        await store.close()
    if args.json:
        doc: dict[str, Any] = {
            "active": snapshot.active,
            "refused": None if snapshot.refused is None else snapshot.refused.value,
            "systems": [r.to_json() for r in rows],
            "history": [e.to_json() for e in entries],
        }
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return exit_code(snapshot)
    print(f"store   {store.description}")
    print(f"active  {snapshot.active}")
    if snapshot.refused is not None:
        print(
            f"REFUSED {Keys(config.router.key_prefix).active} holds {snapshot.refused.value!r}, "
            f"which {snapshot.refused.describe()}; routers stay on {snapshot.active!r}"
        )
    print()
    print(f"{'SYSTEM':<10} {'STATE':<18} {'OPEN':>6} {'GATEWAY':>7} {'ROUTER':>6}  VERSION")
    for r in rows:
        d = r.drain
        states = "+".join(d.states)
        print(
            f"{r.id:<10} {states:<18} {_count(d.open):>6} {_count(d.gateway_open):>7} "
            f"{_count(d.router_open):>6}  {r.version or '-'}"
        )
        if d.gateway_error:
            print(f"{'':<10} gateway count unavailable: {d.gateway_error}")
    print("(OPEN decides drain: the gateway's count where stats_url answers, else the router's)")
    if entries:
        print("\nlast changes:")
        for entry in entries:
            print("  " + audit_line(entry))
    return exit_code(snapshot)


def exit_code(snapshot: Snapshot) -> int:
    """0 when all is in order; EXIT_REFUSED_VALUE while the active key holds a value naming
    no configured system (routing is fail-static on the last valid one, an operator must
    fix the key), so scripts and monitors need not parse the output."""
    return 0 if snapshot.refused is None else EXIT_REFUSED_VALUE
