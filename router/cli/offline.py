"""`token-router offline SYSTEM` / `online SYSTEM`: answer SYSTEM's requests with 503, or stop.

Offlining the active system (exit 3, gate `active`, atomically in Redis) or a system that still
holds calls (exit 3, gate `open`, naming the count) is refused unless `--force`, exactly as the
admin API and page refuse it.
"""

from __future__ import annotations

import argparse

from router.cli.common import (
    Context,
    Parser,
    Subcommands,
    async_command,
    known_system,
    operator,
    with_context,
)
from router.printable import printable
from router.switching import operations


def add_parsers(sub: Subcommands, common: Parser) -> None:
    for name, text in (
        ("offline", "answer SYSTEM's requests with 503 at once"),
        ("online", "bring SYSTEM back after `offline`"),
    ):
        p = sub.add_parser(name, parents=[common], help=text, description=text + " (audited).")
        p.add_argument("system", metavar="SYSTEM")
        if name == "offline":
            p.add_argument(
                "--force",
                action="store_true",
                help="mark it offline although it is the active system or still holds calls "
                "(recorded in the audit)",
            )
        else:
            p.set_defaults(force=False)
        p.add_argument("--reason", metavar="TEXT", type=printable, help="why, for the audit log")
        p.set_defaults(func=async_command(offline_main))


async def offline_main(args: argparse.Namespace) -> int:
    offline = args.command == "offline"

    async def body(ctx: Context) -> int:
        await operations.set_offline(
            ctx.store,
            ctx.config,
            ctx.prober,
            known_system(ctx.config, args.system),
            offline,
            source=operator(),
            force=args.force,
            reason=args.reason or "",
        )
        if offline:
            print(
                f"{args.system} is offline: its requests get 503 at once; "
                "switching to it is refused"
            )
        else:
            print(f"{args.system} is online again")
        return 0

    return await with_context(args, body)
