"""`token-router history`: the audit log of switches, offline/online changes, rollouts and
upgrades, a page at a time (`--limit`, `--since`, `--before`)."""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime

import orjson

from router.cli.common import (
    PROG,
    Parser,
    Subcommands,
    async_command,
    audit_line,
    config_hint,
    positive_int,
    read_config,
    shared_store,
)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def parse_since(text: str, now: float) -> float:
    """`--since`: a duration back from now (`90s`, `30m`, `2h`, `7d`) or a local date and time
    (`2026-12-06`, `2026-12-06 14:00`, ISO 8601 with or without a zone) -> Unix time."""
    value = text.strip()
    found = _DURATION.match(value.lower())
    if found:
        return now - float(found.group(1)) * _SECONDS[found.group(2)]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (90s, 30m, 2h, 7d) nor a date and time "
            "(2026-12-06 14:00)"
        ) from None
    return moment.timestamp()  # a naive time is local, as history prints it


def since_arg(text: str) -> float:
    return parse_since(text, time.time())


def entry_id(text: str) -> str:
    if not _ENTRY_ID.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an audit entry id (like 1733500000000-0)"
        )
    return text


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "history",
        parents=[common],
        help="print the audit log of switches",
        description="The audit log, oldest first, ending with the newest entry: switches, "
        "undo, offline/online, rollout steps and upgrades, whatever made them.",
    )
    p.add_argument(
        "--limit",
        "--count",
        dest="limit",
        type=positive_int,
        default=20,
        metavar="N",
        help="at most N entries, the newest ones (default 20)",
    )
    p.add_argument(
        "--since",
        type=since_arg,
        metavar="WHEN",
        help="only entries since WHEN: a duration back from now (30m, 2h, 7d) or a local "
        "date and time (2026-12-06 14:00)",
    )
    p.add_argument(
        "--before",
        type=entry_id,
        metavar="ID",
        help="the next page: only entries older than this id (printed when more exist)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=async_command(history_main))


async def history_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    since = args.since
    store = shared_store(config)
    try:
        entries = await store.audit(args.limit + 1, before=args.before, since=since)
    finally:
        await store.close()
    page, more = entries[: args.limit], len(entries) > args.limit
    if args.json:
        print(orjson.dumps([e.to_json() for e in page], option=orjson.OPT_INDENT_2).decode())
        return 0
    if not page:
        print("no changes recorded" + (" in that time" if since or args.before else " yet"))
        return 0
    if more:
        print(f"(older entries: `{PROG} history --before {page[-1].id}{config_hint(args)}`)")
    for entry in reversed(page):
        print(audit_line(entry))
    return 0
