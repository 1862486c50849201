"""Showing a frame once, or redrawing it about once a second: `status` and `rollout status`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import orjson

from router.cli.common import Context
from router.errors import StoreUnavailable

Frame = Callable[[Context], Awaitable[tuple[dict[str, Any], list[str]]]]


def add_watch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watch", action="store_true", help="redraw about once a second until Ctrl-C")
    p.add_argument("--json", action="store_true", help="one JSON document (per frame with --watch)")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)


def _ok(doc: dict[str, Any]) -> int:
    return 0


async def show(
    args: argparse.Namespace, frame: Frame, exit_code: Callable[[dict[str, Any]], int] = _ok
) -> int:
    """One frame (text or --json; the exit status from `exit_code`), or with --watch a redraw
    every --interval seconds until Ctrl-C (exit 0). A closed pipe ends it like any command
    (cli.main: 141)."""
    ctx = Context.open(args)
    try:
        if not args.watch:
            doc, lines = await frame(ctx)
            if args.json:
                print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
            else:
                print("\n".join(lines))
            return exit_code(doc)
        return await Watch(sys.stdout, args.interval).run(lambda: frame(ctx), args.json)
    finally:
        await ctx.close()


class Watch:
    """Redraw a frame in place about once a second until Ctrl-C or a closed pipe.

    On a terminal: cursor home, every line rewritten and cleared to its end, the rest of the
    screen cleared: no blank flash between frames. Not on a terminal (a pipe, a log): frames
    one after another, so `status --watch | head` and `| tee` read well.
    """

    HOME, CLEAR_LINE, CLEAR_REST = "\x1b[H", "\x1b[K", "\x1b[J"
    HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"

    def __init__(self, out: TextIO, interval: float) -> None:
        self.out = out
        self.interval = interval
        self.tty = out.isatty()

    async def run(
        self, frame: Callable[[], Awaitable[tuple[dict[str, Any], list[str]]]], as_json: bool
    ) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            if self.tty and not as_json:
                self.out.write(self.HIDE + "\x1b[2J")
            while not stop.is_set():
                try:
                    doc, lines = await frame()
                except StoreUnavailable as exc:
                    doc, lines = {"error": str(exc)}, [f"{time.strftime('%H:%M:%S')}  {exc}"]
                self.draw(doc, lines, as_json)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
            return 0
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if self.tty and not as_json:
                with contextlib.suppress(BrokenPipeError, OSError):
                    self.out.write(self.SHOW + "\n")
                    self.out.flush()

    def draw(self, doc: dict[str, Any], lines: list[str], as_json: bool) -> None:
        if as_json:
            self.out.write(orjson.dumps(doc).decode() + "\n")
        elif self.tty:
            stamp = f"{time.strftime('%H:%M:%S')}  (Ctrl-C to stop)"
            body = "".join(line + self.CLEAR_LINE + "\n" for line in [stamp, *lines])
            self.out.write(self.HOME + body + self.CLEAR_REST)
        else:
            self.out.write(f"--- {time.strftime('%H:%M:%S')}\n" + "\n".join(lines) + "\n\n")
        self.out.flush()
