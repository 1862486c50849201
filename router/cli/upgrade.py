"""`token-router upgrade TARGET`: the whole blue/green procedure, guided and resumable.

Exit codes: 0 done, 1 timed out draining, 2 usage, 3 a gate or check refused, 4 rolled
back (the rollout aborted, or the post-switch watch undid the switch). See docs/upgrades.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading

from router.cli.common import (
    Parser,
    Subcommands,
    async_command,
    config_hint,
    operator,
    positive_float,
    read_config,
    shared_store,
)
from router.errors import BadRequest, UsageError
from router.state.keys import Keys
from router.state.rollout import MAX_INTERVAL, MIN_INTERVAL, parse_interval
from router.upgrade.checks import default_router_url
from router.upgrade.context import Options
from router.upgrade.journal import open_journal
from router.upgrade.plan import EXIT_USAGE
from router.upgrade.procedure import Procedure, summary_lines

DEFAULT_STEPS = "5,25,50,100"


def step_interval(text: str) -> float:
    """`--interval`: the bounds a rollout holds its steps within, refused before anything
    runs (past preflight and the smoke test, the rollout itself would refuse it)."""
    try:
        return parse_interval(text)
    except BadRequest as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("interval: ")) from None


def parse_steps(text: str) -> tuple[int, ...]:
    """`5,25,50,100` -> (5, 25, 50, 100): whole percentages, increasing, ending at 100."""
    steps: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 100:
            raise argparse.ArgumentTypeError(f"{part!r} is not a whole percentage 1..100")
        if steps and int(part) <= steps[-1]:
            raise argparse.ArgumentTypeError(f"steps must increase: {part} follows {steps[-1]}")
        steps.append(int(part))
    if not steps or steps[-1] != 100:
        raise argparse.ArgumentTypeError("the last step must be 100 (all new sessions)")
    return tuple(steps)


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "upgrade",
        parents=[common],
        help="the whole upgrade to TARGET: checks, smoke test, switch, drain (resumable)",
        description="Upgrade to TARGET in six steps, each printed as it starts and ends: "
        "1 preflight (target online, gateway healthy, libraries stored as a release, "
        "public_url reachable, routers agree), 2 preview smoke test (token, urlSchemeDetails, "
        "DELETE, /v/ library), 3 switch (asks first unless --yes), 4 watch the new system "
        "(the routers' post-switch watch; it undoes the switch on a breach), 5 drain the old "
        "system, 6 with --offline-old mark it offline (only after the watch passed). Running "
        "it again resumes from the state in Redis. Exit 0 done, 1 drain timed out, 2 usage, "
        "3 a gate or check refused, 4 rolled back (the rollout aborted or the watch undid).",
    )
    p.add_argument("target", metavar="TARGET")
    p.add_argument(
        "--steps",
        type=parse_steps,
        default=parse_steps(DEFAULT_STEPS),
        metavar="P,P,...",
        help=f"rollout percentages of new sessions (default {DEFAULT_STEPS}; 100 = switch at once)",
    )
    p.add_argument(
        "--interval",
        type=step_interval,
        default=120.0,
        metavar="S",
        help=f"seconds each rollout step holds, {MIN_INTERVAL:g} to {MAX_INTERVAL:g} (default 120)",
    )
    p.add_argument(
        "--drain-timeout",
        type=positive_float,
        default=3600.0,
        metavar="S",
        help="give up waiting for the old system after S seconds, exit 1 (default 3600)",
    )
    p.add_argument(
        "--offline-old",
        action="store_true",
        help="mark the old system offline once drained, for its own upgrade",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run the checks of steps 1-2 that change nothing and print the plan",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before switching")
    p.add_argument(
        "--router",
        action="append",
        metavar="URL",
        help="a router's proxy URL to check and smoke-test through (repeatable; "
        "default: router.listen of the configuration)",
    )
    p.set_defaults(func=async_command(upgrade_main))


async def ask(question: str) -> bool:
    """The confirmation before step 3, read from the terminal without blocking the loop.

    The read runs in a daemon thread, not the loop's executor: a Ctrl-C at the prompt ends
    the command at once, where the executor's shutdown would wait for a line that never comes.
    """
    print(question, end="", flush=True)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def give(line: str) -> None:
        if not answer.done():  # cancelled by Ctrl-C meanwhile
            answer.set_result(line)

    def read() -> None:
        loop.call_soon_threadsafe(give, sys.stdin.readline())

    threading.Thread(target=read, name="confirm", daemon=True).start()
    return (await answer).strip().lower() in ("y", "yes")


def _out(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def upgrade_main(args: argparse.Namespace) -> int:
    config = read_config(args)
    if not args.yes and not args.dry_run and not sys.stdin.isatty():
        _err(
            "token-router: error: no terminal to confirm the switch on; pass --yes to "
            "upgrade without asking (or --dry-run to only check)"
        )
        return EXIT_USAGE
    store = shared_store(config)
    r = config.router
    try:
        journal = open_journal(r.redis_url, Keys(r.key_prefix), timeout=r.redis_timeout)
    except BadRequest as exc:
        raise UsageError(str(exc)) from None
    options = Options(
        target=args.target,
        source=operator(),
        routers=tuple(args.router or [default_router_url(config)]),
        steps=args.steps,
        interval=args.interval,
        drain_timeout=args.drain_timeout,
        offline_old=args.offline_old,
        dry_run=args.dry_run,
        yes=args.yes,
        config_hint=config_hint(args),
    )
    procedure = Procedure(config, store, journal, options, out=_out, err=_err, confirm=ask)
    try:
        code = await procedure.run()
    finally:
        await journal.close()
        await store.close()
    if procedure.timings:
        _out("time per step:")
        for line in summary_lines(procedure.timings):
            _out(line)
    return code
