"""`token-router`: the command line.

Every user error (bad config, unknown system, unreachable Redis, ...) is one line on stderr
and exit status 2; a traceback means a bug in token-router, never a mistake of the user.
Commands that change state talk to Redis directly, through the same atomic scripts as the
routers, so their changes are audited like any other.

One module per command, its parser beside its handler; `common` holds what they share.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from router import __version__, cancellation
from router.cli import (
    demo,
    drain,
    drill,
    history,
    offline,
    releases,
    rollout,
    serve,
    simulate,
    status,
    switch,
    upgrade,
)
from router.cli.common import EXIT_INTERRUPTED, PROG, Parser
from router.errors import GateRefused, RouterError

# 128 + SIGPIPE: what a shell reports for a command whose reader closed the pipe.
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="TOML configuration (default: $TOKENROUTER_CONFIG, else ./router.toml if present; "
        "every key can also come from TOKENROUTER_* environment variables)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log debug details")

    parser = Parser(
        prog=PROG,
        description="Blue/green switching proxy for FCSDK Web Gateway and Live Assist systems. "
        "New sessions go to the system named in Redis (<prefix>:active); everything that "
        "belongs to another system keeps reaching it.",
        epilog=f"Quick start: `{PROG} demo`. Switch with `{PROG} switch b` or "
        "`redis-cli SET tokenrouter:active b`.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    # The order here is the order of `token-router --help`.
    serve.add_parser(sub, common)
    demo.add_parser(sub, common)
    status.add_parser(sub, common)
    switch.add_parser(sub, common)
    switch.add_undo_parser(sub, common)
    rollout.add_parser(sub, common)
    drain.add_parser(sub, common)
    upgrade.add_parser(sub, common)
    drill.add_parser(sub, common)
    offline.add_parsers(sub, common)
    history.add_parser(sub, common)
    simulate.add_parser(sub, common)
    releases.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # --help and --version write too: `token-router --help | head`
            sys.stdout.flush()
            raise
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
        return code
    except GateRefused as exc:
        # SPEC section 1: a safety gate's refusal is exit 3, one line naming the gate.
        override = " (override with --force)" if exc.overridable else ""
        print(f"{PROG}: refused by gate {exc.gate}: {exc}{override}", file=sys.stderr)
        return 3
    except RouterError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, cancellation.Interrupted):
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`token-router status | head`): nothing is wrong with the
        # command, and nobody is left to read more. Silence the interpreter's last flush of
        # stdout and end as a process stopped by SIGPIPE does in a shell.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    finally:
        logging.shutdown()
