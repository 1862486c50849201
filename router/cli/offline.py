"""`token-router offline SYSTEM` / `online SYSTEM`: answer SYSTEM's requests with 503, or stop."""

from __future__ import annotations

import argparse

from router.cli.common import (
    Parser,
    Subcommands,
    async_command,
    known_system,
    operator,
    read_config,
    read_snapshot,
    shared_store,
)
from router.errors import UsageError


def add_parsers(sub: Subcommands, common: Parser) -> None:
    for name, text in (
        ("offline", "answer SYSTEM's requests with 503 at once"),
        ("online", "bring SYSTEM back after `offline`"),
    ):
        p = sub.add_parser(name, parents=[common], help=text, description=text + " (audited).")
        p.add_argument("system", metavar="SYSTEM")
        if name == "offline":
            p.add_argument(
                "--force", action="store_true", help="allow marking the active system offline"
            )
        else:
            p.set_defaults(force=False)
        p.set_defaults(func=async_command(offline_main))


async def offline_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    offline = args.command == "offline"
    store = shared_store(config)
    try:
        snapshot = await read_snapshot(store, config)
        if offline and snapshot.active == system and not args.force:
            raise UsageError(
                f"{system} is the active system: marking it offline refuses every new session; "
                f"switch first, or pass --force"
            )
        await store.set_offline(system, offline, operator())
    finally:
        await store.close()
    if offline:
        print(f"{system} is offline: its requests get 503 at once; switching to it is refused")
    else:
        print(f"{system} is online again")
    return 0
