"""`token-router switch SYSTEM` (alias `flip`): send new sessions to SYSTEM, audited."""

from __future__ import annotations

import argparse

from router.cli.common import (
    PROG,
    Parser,
    Subcommands,
    async_command,
    config_hint,
    known_system,
    operator,
    read_config,
    shared_store,
)


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "switch",
        aliases=["flip"],
        parents=[common],
        help="send new sessions to SYSTEM (audited)",
        description="Make SYSTEM the active system. Refused when SYSTEM is "
        "offline. Equivalent to `redis-cli SET <prefix>:active SYSTEM`, "
        "but recorded with your user and host.",
    )
    p.add_argument("system", metavar="SYSTEM")
    p.set_defaults(func=async_command(switch_main))


async def switch_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    system = known_system(config, args.system)
    store = shared_store(config)
    try:
        previous = await store.switch(system, operator(), config.system_ids)
    finally:
        await store.close()
    if previous == system:
        print(f"{system} was already active; nothing changed")
        return 0
    print(f"switched: new sessions go to {system} (before: {previous or 'none'})")
    if previous:
        wait = f"{PROG} drain-wait {previous}{config_hint(args)}"
        print(
            f"every router follows within a second; `{wait}` tells when "
            f"{previous} holds nothing more"
        )
    return 0
