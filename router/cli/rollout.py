"""`token-router rollout start|status|pause|resume|promote|abort`: progressive rollouts.

The command only writes the rollout (through operations.py, with the gates and the audit);
the router instances drive it (router/switching/controller.py), so it goes on when this terminal
closes. Bad input is one line and exit 2 with nothing written; a gate's refusal exit 3.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

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
from router.cli.watch import add_watch_flags, show
from router.errors import BadRequest, UsageError
from router.printable import printable
from router.state.rollout import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_MIN_REQUESTS,
    MAX_INTERVAL,
    MAX_MIN_REQUESTS,
    MIN_INTERVAL,
)
from router.switching import operations
from router.switching.operations import RolloutRequest


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "rollout",
        help="progressive rollout of new sessions to a system (start, status, pause, ...)",
        description="Send a growing share of new sessions to SYSTEM, step by step, driven by "
        "the routers themselves; automatic abort on a failing probe or too many failed token "
        "requests; the target becomes active after the last step.",
    )
    rsub = p.add_subparsers(dest="rollout_command", metavar="ACTION", parser_class=Parser)
    rsub.required = True
    q = rsub.add_parser(
        "start",
        parents=[common],
        help="start a rollout: rollout start b --steps 5,25,50,100 --interval 120",
    )
    q.add_argument("system", metavar="SYSTEM")
    q.add_argument("--steps", required=True, help="percentages, increasing, 1..100")
    q.add_argument(
        "--interval",
        required=True,
        help=f"seconds each step holds ({MIN_INTERVAL:g} to {MAX_INTERVAL:g}: a second to a week)",
    )
    q.add_argument(
        "--max-error-rate",
        default=str(DEFAULT_MAX_ERROR_RATE),
        help=f"abort when this share of SYSTEM's token requests fails "
        f"(default {DEFAULT_MAX_ERROR_RATE})",
    )
    q.add_argument(
        "--min-requests",
        default=str(DEFAULT_MIN_REQUESTS),
        help=f"requests in a step before the error share counts (1 to {MAX_MIN_REQUESTS:,}; "
        f"default {DEFAULT_MIN_REQUESTS})",
    )
    q.add_argument(
        "--max-latency",
        metavar="S",
        help="abort when the p99 of SYSTEM's token answers in a step exceeds S seconds "
        "(0: off; default router.latency_max_p99)",
    )
    q.add_argument(
        "--latency-factor",
        metavar="F",
        help="abort when that p99 exceeds F times the source's in the same seconds "
        "(0: off; default router.latency_factor)",
    )
    add_guard_flags(q)
    q.set_defaults(func=async_command(start_main))

    q = rsub.add_parser("status", parents=[common], help="target, step, share, next step, counts")
    add_watch_flags(q)
    q.set_defaults(func=async_command(status_main))

    for action, text in (
        ("pause", "hold the current share; steps stop advancing"),
        ("resume", "let steps advance again"),
        ("promote", "straight to 100 %: the target becomes active (through the gates)"),
        ("abort", "share to 0 at once; the active system is unchanged"),
    ):
        # argparse %-formats help strings ("100 %: " read as a format): escape the percent.
        q = rsub.add_parser(
            action, parents=[common], help=text.replace("%", "%%"), description=text + "."
        )
        q.add_argument("--reason", metavar="TEXT", type=printable, help="why, for the audit log")
        if action == "promote":
            q.add_argument("--force", action="store_true", help="override the gates")
        q.set_defaults(func=async_command(action_main), force=False)


async def start_main(args: argparse.Namespace) -> int:
    async def body(ctx: Context) -> int:
        try:
            request = RolloutRequest.parse(
                ctx.config,
                {
                    "system": known_system(ctx.config, args.system),
                    "steps": args.steps,
                    "interval": args.interval,
                    "max_error_rate": args.max_error_rate,
                    "min_requests": args.min_requests,
                    "max_latency": args.max_latency,
                    "latency_factor": args.latency_factor,
                },
            )
        except BadRequest as exc:
            raise UsageError(str(exc)) from None
        r, generation = await operations.start_rollout(
            ctx.store,
            ctx.config,
            ctx.gates,
            request,
            source=operator(),
            force=args.force,
            reason=args.reason or "",
        )
        confirmation = await ctx.confirm(generation)
        steps = " -> ".join(f"{s} %" for s in r.steps)
        print(
            f"rollout {r.source} -> {r.target} started: {r.percent} % of new sessions to "
            f"{r.target}; {confirmation.text()}"
        )
        print(
            f"steps {steps}, each held {r.interval:g} s; aborts itself when {r.target}'s "
            f"probe fails or {r.max_error_rate:.1%} of its token requests fail "
            f"(after {r.min_requests})"
        )
        print(f"follow it: `{PROG} rollout status --watch{config_hint(args)}`")
        return applied_everywhere(confirmation, args)

    return await with_context(args, body)


async def action_main(args: argparse.Namespace) -> int:
    action = args.rollout_command

    async def body(ctx: Context) -> int:
        source, reason = operator(), args.reason or ""
        if action == "promote":
            outcome = await operations.promote_rollout(
                ctx.store, ctx.config, ctx.gates, source=source, force=args.force, reason=reason
            )
            outcome = await ctx.confirmed(outcome)
            print(outcome.text("promoted:"))
            return applied_everywhere(outcome.confirmation, args)
        if action == "pause":
            r, generation = await operations.pause_rollout(ctx.store, source=source, reason=reason)
            what = f"rollout to {r.target} paused at {r.percent} %"
        elif action == "resume":
            r, generation = await operations.resume_rollout(ctx.store, source=source, reason=reason)
            what = f"rollout to {r.target} resumed at {r.percent} %"
        else:
            r, generation = await operations.abort_rollout(ctx.store, source=source, reason=reason)
            what = f"rollout to {r.target} aborted: new sessions go to {r.source} only"
        confirmation = await ctx.confirm(generation)
        print(f"{what}; {confirmation.text()}")
        return applied_everywhere(confirmation, args)

    return await with_context(args, body)


def rollout_lines(view: dict[str, Any] | None, now: float) -> list[str]:
    if view is None:
        return ["rollout  none"]
    steps = view["steps"]
    plan = ", ".join(str(s) for s in steps)
    if view["state"] not in ("running", "paused"):
        return [
            f"rollout  none running; the last one, {view['source']} -> {view['target']} "
            f"({plan} %), {view['state']} at step {view['step'] + 1}/{len(steps)}: "
            f"{view.get('end_reason') or '-'}"
        ]
    done = view["step"] + 1
    bar_width = 20
    filled = round(bar_width * view["percent"] / 100)
    bar = "#" * filled + "." * (bar_width - filled)
    lines = [
        f"rollout  {view['source']} -> {view['target']}  {view['state'].upper()}  "
        f"[{bar}] {view['percent']} %  step {done}/{len(steps)} ({plan})"
    ]
    if view["state"] == "running" and view["next_in"] is not None:
        nxt = f"{view['target']} becomes active" if done == len(steps) else f"{steps[done]} %"
        lines.append(f"         next: {nxt} in {view['next_in']:.0f} s")
    counts = view.get("counts") or {}
    if counts:
        parts = []
        for system, c in sorted(counts.items()):
            share = c["failures"] / c["requests"] if c["requests"] else 0.0
            parts.append(f"{system} {c['requests']} req / {c['failures']} failed ({share:.1%})")
        lines.append("         this step: " + "; ".join(parts))
    slow = []
    if view.get("max_latency"):
        slow.append(f"a p99 over {view['max_latency']:g} s")
    if view.get("latency_factor"):
        slow.append(f"over {view['latency_factor']:g} x {view['source']}'s p99")
    lines.append(
        f"         abort at {view['max_error_rate']:.1%} errors"
        + (f" or {' or '.join(slow)}" if slow else "")
        + f" after {view['min_requests']} requests"
    )
    return lines


async def status_main(args: argparse.Namespace) -> int:
    async def frame(ctx: Context) -> tuple[dict[str, Any], list[str]]:
        now = time.time()
        view = await operations.rollout_view(ctx.store, now)
        return {"rollout": view}, rollout_lines(view, now)

    return await show(args, frame)
