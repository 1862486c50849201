"""`token-router simulate-gateway`: one simulated FCSDK/Live Assist system."""

from __future__ import annotations

import argparse
import asyncio
import signal

from router.cli.common import Parser, Subcommands, run_async, tcp_port
from router.errors import UsageError
from router.logs import setup_logging


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "simulate-gateway",
        parents=[common],
        help="run one simulated FCSDK/Live Assist system",
        description="One simulated system (SPEC section 5) for tests, demos and "
        "load tests; /_sim/fail, /_sim/slow and /_sim/version control it.",
    )
    p.add_argument("--name", default="a", help="system name, prefixes its tokens (default a)")
    p.add_argument("--version", default="1.0", help="library version it serves (default 1.0)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=tcp_port, default=9001, help="port (default 9001; 0 = any)")
    p.add_argument(
        "--echo-description",
        action="store_true",
        help="answer a token with the urlSchemeDetails it was sent besides the sessionid, as "
        "some gateways do (default: the documented answer, the sessionid alone)",
    )
    p.add_argument(
        "--delete-status",
        type=_success_status,
        default=204,
        help="the 2xx a session DELETE answers (default 204, as documented)",
    )
    p.set_defaults(func=cmd_simulate)


def _success_status(text: str) -> int:
    try:
        status = int(text)
    except ValueError:
        status = 0
    if not 200 <= status <= 299:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 2xx status (e.g. 204)")
    return status


def cmd_simulate(args: argparse.Namespace) -> int:
    from router.simulator import GatewayOptions, run_gateway

    setup_logging("text", "debug" if args.verbose else "info")

    async def main() -> int:
        options = GatewayOptions(args.echo_description, args.delete_status)
        task = asyncio.create_task(
            run_gateway(args.name, args.version, args.host, args.port, options)
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            ) from None
        return 0

    return run_async(main())
