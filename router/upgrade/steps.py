"""The six steps of an upgrade, each a function over the upgrade's `Context`, and `STEPS`,
the table `Procedure` runs them from (plan.STEPS orders them; plan.STEP_TITLES names them).

A step returns the one-line detail its "ok" line shows, or raises `StepFailed` with the exit
code and why; the procedure prints, times and audits it either way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from router import cancellation
from router.config import Config
from router.errors import StoreUnavailable
from router.state import rollout as rollouts
from router.state.snapshot import Snapshot, build_snapshot
from router.state.store import StateStore
from router.switching import operations
from router.switching.fleet import STALE_BEATS
from router.systems.drain import Drain, DrainHistory, describe, format_age, stall_advice
from router.systems.prober import GatewayProber
from router.systems.reports import open_items_view, read_counts, reports
from router.upgrade import checks, watch_step
from router.upgrade.context import PROPAGATION_BOUND, ROLLOUTS, Context, StepFailed
from router.upgrade.plan import (
    EXIT_DRAIN_TIMEOUT,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    switch_plan,
)


async def preflight_checks(ctx: Context, *, store_new: bool) -> list[checks.Check]:
    opts = ctx.options
    system = ctx.config.systems[opts.target]
    stored = await ctx.patient("reading the state", ctx.store.read_state)
    found: list[checks.Check] = [
        checks.Check(
            "target configured and online",
            opts.target not in stored.offline,
            f"{opts.target}: gateway {system.gateway}, public_url {system.public_url}",
        )
    ]
    found.append(checks.gateway_health(system, await ctx.prober.probe(opts.target)))
    if ctx.config.router.redis_url.startswith("memory://"):
        release_check = await checks.release_via_router(ctx.config, opts.target, opts.routers)
        ctx.release = release_check[1]
        found.append(release_check[0])
    else:
        check, ctx.release = await ctx.patient(
            "checking the release",
            lambda: checks.release_stored(ctx.config, opts.target, store_new=store_new),
        )
        found.append(check)
    found.append(await checks.public_url_reachable(system))
    active = (await ctx.observe()).active
    found.append(await checks.routers_agree(opts.routers, active))
    found.append(await instances_agree(ctx))
    return found


async def instances_agree(ctx: Context) -> checks.Check:
    """Every live router instance (heartbeats in Redis) applied the current state."""
    r = ctx.config.router
    stored = await ctx.patient("reading the state", ctx.store.read_state)
    live = await ctx.patient(
        "reading the instances",
        lambda: ctx.store.instances(time.time(), r.heartbeat_interval * STALE_BEATS),
    )
    if not live:
        return checks.Check("instances agree", False, "no live router instance registered")
    behind = [
        str(doc.get("id"))
        for doc in live
        if int((doc.get("applied") or {}).get("generation", 0)) < stored.generation
    ]
    if behind:
        return checks.Check(
            "instances agree",
            False,
            f"{len(behind)}/{len(live)} live instances have not applied generation "
            f"{stored.generation}: {', '.join(behind)}",
        )
    return checks.Check(
        "instances agree",
        True,
        f"{len(live)} live instance(s), all at generation {stored.generation}",
    )


async def preflight(ctx: Context) -> str:
    found = await preflight_checks(ctx, store_new=True)
    for check in found:
        ctx.out("  " + check.line())
    bad = [c for c in found if not c.ok]
    if bad:
        raise StepFailed(EXIT_REFUSED, "; ".join(f"{c.name}: {c.detail}" for c in bad))
    return f"{len(found)} checks passed"


async def smoke(ctx: Context) -> str:
    opts = ctx.options
    if not opts.routers:
        raise StepFailed(EXIT_REFUSED, "no router to test through (give --router URL)")
    if not ctx.release:
        _, ctx.release = await release_now(ctx)
    result = await checks.smoke_test(ctx.config, opts.target, opts.routers[0], ctx.release)
    for check in result.checks:
        ctx.out("  " + check.line())
    if not result.ok:
        bad = [c for c in result.checks if not c.ok]
        raise StepFailed(EXIT_REFUSED, "; ".join(f"{c.name}: {c.detail}" for c in bad))
    return f"{len(result.checks)} checks passed through {opts.routers[0]}"


async def release_now(ctx: Context) -> tuple[checks.Check, str]:
    if ctx.config.router.redis_url.startswith("memory://"):
        return await checks.release_via_router(ctx.config, ctx.options.target, ctx.options.routers)
    # Fingerprinted now (a resumed upgrade's target may have changed since the preflight).
    return await checks.release_stored(ctx.config, ctx.options.target, store_new=True)


async def switch(ctx: Context) -> str:
    opts = ctx.options
    assert ctx.record is not None
    ctx.switched_at = time.time() - 10.0  # the audit's clock may be another host's
    current, _ = await ctx.patient(
        "reading the rollout", lambda: operations.current_rollout(ctx.store)
    )
    if current is not None and current.running and current.id == ctx.record.rollout_id:
        ctx.out(f"  the rollout to {current.target} is {current.state}: watching it")
        return await watch_rollout(ctx)
    if not opts.yes:
        question = (
            f"switch new sessions from {ctx.record.old} to {opts.target} "
            f"({switch_plan(opts.steps, opts.interval, ROLLOUTS)})? [y/N] "
        )
        if ctx.confirm is None or not await ctx.confirm(question):
            raise StepFailed(EXIT_REFUSED, "not confirmed; nothing was switched")
    reason = f"token-router upgrade {ctx.record.id}"
    if list(opts.steps) != [100]:
        request = operations.RolloutRequest(
            target=opts.target,
            steps=opts.steps,
            interval=opts.interval,
            max_error_rate=rollouts.DEFAULT_MAX_ERROR_RATE,
            min_requests=rollouts.DEFAULT_MIN_REQUESTS,
        )
        started, _ = await operations.start_rollout(
            ctx.store, ctx.config, ctx.gates, request, source=opts.source, reason=reason
        )
        await ctx.update(rollout_id=started.id)
        ctx.out(f"  rollout {started.id} started: {started.percent} % of new sessions")
        return await watch_rollout(ctx)
    r = ctx.config.router
    began = time.monotonic()
    outcome = await operations.switch(
        ctx.store,
        ctx.config,
        ctx.gates,
        opts.target,
        source=opts.source,
        expect=ctx.record.old,
        reason=reason,
    )
    confirmation = await operations.confirm(
        ctx.store,
        outcome.generation,
        timeout=r.confirm_timeout,
        heartbeat=r.heartbeat_interval,
    )
    ctx.out(f"  {outcome.text()}; {confirmation.text()}")
    routers = await propagated(ctx, opts.target)
    ctx.out("  " + routers.line())
    if not routers.ok:
        raise StepFailed(EXIT_REFUSED, f"switched, but {routers.detail}")
    if not confirmation.complete:
        # Done only when every live instance applied it (as `switch` exits 5): one still on
        # the old state keeps sending new sessions to the old system, so no drain can end.
        raise StepFailed(EXIT_REFUSED, f"switched, but {confirmation.text()}")
    ms = (time.monotonic() - began) * 1000
    return f"{outcome.previous or '(none)'} -> {opts.target}, confirmed in {ms:.0f} ms"


async def watch_rollout(ctx: Context) -> str:
    """Until the rollout the routers drive ends: promoted (ok), aborted (rolled back)."""
    began = time.monotonic()
    last = ""
    while True:
        view = await ctx.patient(
            "reading the rollout", lambda: operations.rollout_view(ctx.store, time.time())
        )
        if view is None:
            raise StepFailed(EXIT_REFUSED, "the rollout document disappeared")
        state = str(view["state"])
        counts = view.get("counts") or {}
        shown = ", ".join(
            f"{s} {c['requests']} req/{c['failures']} failed" for s, c in counts.items()
        )
        line = f"step {view['step_number']}/{len(view['steps'])}: {view['percent']} %"
        if state == "paused":
            line += " (paused: `token-router rollout resume` continues it)"
        if line != last and state in ("running", "paused"):
            ctx.out(f"  rollout {line}" + (f"; {shown}" if shown else ""))
            last = line
        if state == "promoted":
            took = time.monotonic() - began
            return f"rollout promoted: {ctx.options.target} active after {took:.1f} s"
        if state == "aborted":
            why = str(view.get("end_reason") or "aborted")
            ctx.out(f"  rollout aborted: {why}")
            raise StepFailed(EXIT_ROLLED_BACK, why)
        if state == "ended":
            active = (await ctx.observe()).active
            if active == ctx.options.target:
                return f"rollout overtaken by a switch: {active} is active"
            raise StepFailed(
                EXIT_REFUSED,
                f"the rollout was ended by a switch to {active}",
            )
        await cancellation.sleep(0.25)


async def propagated(ctx: Context, target: str) -> checks.Check:
    deadline = time.monotonic() + PROPAGATION_BOUND
    while True:
        check = await checks.routers_agree(ctx.options.routers, target)
        if check.ok or time.monotonic() >= deadline:
            return check
        await cancellation.sleep(0.05)


async def watch(ctx: Context) -> str:
    """Follow the routers' post-switch watch of this switch until it passed (watch_step.py)."""
    assert ctx.record is not None
    outcome = await watch_step.follow(
        ctx.store,
        ctx.config,
        target=ctx.options.target,
        old=ctx.record.old,
        since=ctx.switched_at,
        out=ctx.out,
        read=lambda call: ctx.patient("reading the watch", call),
    )
    if outcome.kind == "undone":
        raise StepFailed(EXIT_ROLLED_BACK, outcome.message)
    if outcome.kind in ("alarm", "ended") or (outcome.kind == "missing" and ctx.record.offline_old):
        raise StepFailed(EXIT_REFUSED, outcome.message)
    return outcome.message


async def drain(ctx: Context) -> str:
    opts = ctx.options
    assert ctx.record is not None
    old = ctx.record.old
    started = time.monotonic()
    deadline = started + opts.drain_timeout
    last_line, last_print = "", 0.0
    history = DrainHistory(ctx.config.router.drain_stall_after)
    while True:
        view = await drain_view(ctx.store, ctx.config, ctx.prober, old, history)
        now = time.monotonic()
        if view.line != last_line or now - last_print >= 10:
            ctx.out(f"  {old}: {view.line}")
            last_line, last_print = view.line, now
        if view.drained:
            ctx.drain_seconds = now - started
            return f"{old} holds no calls after {ctx.drain_seconds:.1f} s"
        if now >= deadline:
            await drain_advice(ctx, old)
            raise StepFailed(
                EXIT_DRAIN_TIMEOUT,
                f"{old} still holds calls after {opts.drain_timeout:g} s ({view.line})",
            )
        await cancellation.sleep(min(opts.drain_interval, max(0.0, deadline - now)))


async def drain_advice(ctx: Context, old: str) -> None:
    """What holds `old` (the oldest items the routers know) and what to do about it."""
    try:
        doc = await open_items_view(ctx.store, ctx.config, old, 5)
    except StoreUnavailable as exc:
        ctx.out(f"  (cannot list what holds {old}: {exc})")
    else:
        ctx.out(f"  {old}: {doc['total']} open item(s) the routers know, oldest first:")
        for item in doc["items"]:
            issuer = item["issuer"] or "(not recorded)"
            ctx.out(
                f"    {item['kind']} {item['id']}, {format_age(item['age'])} old, "
                f"issued by {issuer}"
            )
    for line in stall_advice(old):
        ctx.out(f"  {line}")


async def offline(ctx: Context) -> str:
    assert ctx.record is not None
    old = ctx.record.old
    await ctx.patient(
        "marking offline", lambda: ctx.store.set_offline(old, True, ctx.options.source)
    )
    return f"{old} is offline: its requests get 503 at once, ready for its own upgrade"


Step = Callable[[Context], Awaitable[str]]

# plan.STEPS order -> the function that runs the step.
STEP_RUNNERS: dict[str, Step] = {
    "preflight": preflight,
    "smoke": smoke,
    "switch": switch,
    "watch": watch,
    "drain": drain,
    "offline": offline,
}


@dataclass(frozen=True, slots=True)
class DrainView:
    open: int | None
    drained: bool
    line: str
    drain: Drain | None = None


async def drain_view(
    store: StateStore, config: Config, prober: GatewayProber, system: str, history: DrainHistory
) -> DrainView:
    """The drain state of `system` by the one drain function every surface shares
    (router/systems/drain.py): deciding count and its source, the router's count beside it, the
    rate it falls and an estimate of when it reaches 0 (from `history`'s samples)."""
    try:
        stored = await store.read_state()
        known = config.system_ids
        fallback = stored.recorded if stored.recorded in known else config.default_system
        assert fallback is not None
        snapshot = build_snapshot(stored, known, Snapshot(active=fallback), time.time())
        counts, previewing, _ = await read_counts(store, config.system_ids)
        probes = {system: await prober.gateway_count(system, max_age=0.0)}
        rows = reports(config, snapshot, counts, previewing, probes, history)
    except StoreUnavailable as exc:
        return DrainView(None, False, f"unknown ({exc})")
    d = next(r.drain for r in rows if r.id == system)
    return DrainView(d.open, d.drained, describe(d), d)


def client_session() -> Any:
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=checks.TIMEOUT))
