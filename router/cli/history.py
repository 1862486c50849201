"""`token-router history`: the audit log of switches and offline/online changes."""

from __future__ import annotations

import argparse

import orjson

from router.cli.common import (
    Parser,
    Subcommands,
    async_command,
    audit_line,
    positive_int,
    read_config,
    shared_store,
)


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser("history", parents=[common], help="print the audit log of switches")
    p.add_argument("--count", type=positive_int, default=20, help="entries (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=async_command(history_main))


async def history_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    store = shared_store(config)
    try:
        entries = await store.audit(args.count)
    finally:
        await store.close()
    if args.json:
        print(orjson.dumps([e.to_json() for e in entries], option=orjson.OPT_INDENT_2).decode())
        return 0
    if not entries:
        print("no switches recorded yet")
    for entry in reversed(entries):
        print(audit_line(entry))
    return 0
