"""`token-router switch SYSTEM` (alias `flip`) and `token-router undo`: guarded switches.

Through the gates (operations.py): refused with exit 3 and one line naming the gate when the
target is offline, its gateway did not answer a recent health probe, or (`--expect`) the
active system is no longer the one expected. Answers once every live router instance applied
the change: `switched a -> b; applied by 3/3 instances in 12 ms`.
"""

from __future__ import annotations

import argparse

from router.cli.common import (
    PROG,
    Context,
    Parser,
    Subcommands,
    add_guard_flags,
    applied_everywhere,
    async_command,
    config_hint,
    known_system,
    operator,
    with_context,
)
from router.switching import operations


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "switch",
        aliases=["flip"],
        parents=[common],
        help="send new sessions to SYSTEM (gated, audited, confirmed)",
        description="Make SYSTEM the active system, through the gates: SYSTEM is not "
        "offline and its gateway answered a health probe within router.gate_probe_age "
        "seconds (probed now if not). A refusal names the gate and exits 3. Answers once "
        "every live router instance applied it (router.confirm_timeout).",
    )
    p.add_argument("system", metavar="SYSTEM")
    add_guard_flags(p, expect=True)
    p.set_defaults(func=async_command(switch_main))


def add_undo_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "undo",
        parents=[common],
        help="switch back to the system active before the last switch (through the gates)",
        description="Switch back to the system that was active before the last switch, "
        "through the same gates as a switch (exit 3 when one refuses); the last switch must "
        "still be in force (compare-and-set).",
    )
    add_guard_flags(p)
    p.set_defaults(func=async_command(undo_main))


async def switch_main(args: argparse.Namespace) -> int:
    async def body(ctx: Context) -> int:
        outcome = await operations.switch(
            ctx.store,
            ctx.config,
            ctx.gates,
            known_system(ctx.config, args.system),
            source=operator(),
            expect=None if args.expect is None else known_system(ctx.config, args.expect),
            force=args.force,
            reason=args.reason or "",
        )
        if outcome.forced:
            print(f"forced past: {outcome.forced}")
        outcome = await ctx.confirmed(outcome)
        print(outcome.text())
        if outcome.changed and outcome.previous:
            hint = config_hint(args)
            print(
                f"`{PROG} drain-wait {outcome.previous}{hint}` tells when {outcome.previous} "
                f"holds nothing more; `{PROG} undo{hint}` switches back"
            )
        return applied_everywhere(outcome.confirmation, args)

    return await with_context(args, body)


async def undo_main(args: argparse.Namespace) -> int:
    async def body(ctx: Context) -> int:
        outcome = await operations.undo(
            ctx.store,
            ctx.config,
            ctx.gates,
            source=operator(),
            force=args.force,
            reason=args.reason or "",
        )
        if outcome.forced:
            print(f"forced past: {outcome.forced}")
        outcome = await ctx.confirmed(outcome)
        print(outcome.text("undone:"))
        return applied_everywhere(outcome.confirmation, args)

    return await with_context(args, body)
