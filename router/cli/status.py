"""`token-router status [--watch] [--json]`: the active system, the rollout, each system's
state, open counts (gateway and router), health and release, the router instances and the
last changes; `--watch` redraws it about once a second."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Any

from router.cli import routers
from router.cli.common import (
    EXIT_REFUSED_VALUE,
    Context,
    Parser,
    Subcommands,
    async_command,
    audit_line,
)
from router.cli.rollout import rollout_lines
from router.cli.watch import add_watch_flags, show
from router.config import Config
from router.errors import StoreUnavailable
from router.releases.store import open_release_store
from router.state import watch as watching
from router.state.keys import Keys
from router.state.sentinel import redis_target
from router.state.store import AuditEntry
from router.switching import operations
from router.switching.fleet import STALE_BEATS
from router.switching.watch_driver import thresholds
from router.systems.drain import DrainHistory, Trend
from router.systems.reports import read_counts, view_report
from router.systems.view import fleet_summary


def add_parser(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="show the active system, rollout, systems, instances and recent changes",
    )
    add_watch_flags(p)
    p.add_argument(
        "--router",
        action="append",
        metavar="URL",
        help="a router's admin URL to ask for the drain trend it measures, and what it "
        "routes on when Redis is unavailable (repeatable; default: router.admin_listen of "
        "the configuration)",
    )
    p.set_defaults(func=async_command(status_main))


async def status_main(args: argparse.Namespace) -> int:
    histories: list[DrainHistory] = []  # across the frames of --watch: the drain trend

    async def frame(ctx: Context) -> tuple[dict[str, Any], list[str]]:
        if not histories:
            histories.append(DrainHistory(ctx.config.router.drain_stall_after))
        # --watch samples the counts itself; a one-shot status takes the trend of a router
        # that has been sampling them (its admin listener does, every 2 s during a drain).
        ask = None if args.watch else (args.router or routers.default_urls(ctx.config))
        try:
            doc = await status_document(ctx, histories[0], ask)
        except StoreUnavailable as exc:
            doc = await routers.without_store(
                ctx.config, args.router or (), ctx.store.description, exc
            )
            return doc, routers.lines(doc, time.time())
        return doc, status_lines(doc, time.time())

    return await show(args, frame, exit_code)


def exit_code(doc: dict[str, Any]) -> int:
    """0 when all is in order; EXIT_REFUSED_VALUE while the active key holds a value the
    routers refuse (routing is fail-static on the last valid one) or a key of the namespace
    holds something unusable: an operator must fix a key, and scripts and monitors need not
    parse the output to know it; the same (degraded) while Redis is unavailable and the
    routers route on their last known state."""
    if doc.get("degraded"):
        return EXIT_REFUSED_VALUE
    return 0 if doc["refused"] is None and not doc.get("problems") else EXIT_REFUSED_VALUE


async def status_document(
    ctx: Context, history: DrainHistory | None = None, ask: Sequence[str] | None = None
) -> dict[str, Any]:
    """Everything `status` shows, as one document (also `status --json`). Each system's state
    and counts come from the one drain function (router/systems/drain.py); `history`, kept
    across the frames of `--watch`, gives the drain rate and the estimate. `ask`: the admin
    URLs of routers whose measured trend replaces `history` (a one-shot status; the first
    that answers and is live in this store), as `trend_from` says."""
    config, store = ctx.config, ctx.store
    r = config.router
    stored = await store.read_state()
    snapshot = operations.snapshot_of(stored, config)
    live = await store.instances(time.time(), r.heartbeat_interval * STALE_BEATS)
    counts, previewing, _ = await read_counts(store, config.system_ids)
    probes, (measured, trend) = await asyncio.gather(
        ctx.prober.probe_all(), _trend(config, ask, {str(d.get("id")) for d in live})
    )
    # One probe per system answers both its health and the gateway's own count.
    gateway_counts = {
        sid: probe.gateway_count() for sid, probe in probes.items() if config.systems[sid].stats_url
    }
    view, rows = view_report(
        config, snapshot, counts, previewing, gateway_counts, history, measured=measured
    )
    releases, labels = await _releases(config)
    systems = []
    for row in rows:
        probe = probes[row.id]
        item = row.to_json()
        item["health"] = {"ok": probe.ok, "checked_at": probe.at, "error": probe.error or None}
        item["release"] = releases.get(row.id)
        # The label of the release it serves, as the page and /api/status show it.
        item["version"] = labels.get(row.id) or item["version"]
        systems.append(item)
    refused = snapshot.refused
    return {
        "store": store.description,
        "active": snapshot.active,
        **view.to_json(),
        "refused": None if refused is None else {"value": refused.value, "reason": refused.reason},
        "problems": [p.to_json() for p in stored.problems],
        "generation": stored.generation,
        "rollout": await operations.rollout_view(store, time.time()),
        "watch": await watch_document(ctx),
        "systems": systems,
        "trend_from": trend,
        "instances": [
            {
                **d,
                "current": int((d.get("applied") or {}).get("generation", 0)) >= stored.generation,
            }
            for d in live
        ],
        "history": [e.to_json() for e in await store.audit(5)],
    }


async def _trend(
    config: Config, ask: Sequence[str] | None, live: set[str]
) -> tuple[dict[str, Trend], dict[str, Any]]:
    if ask is None:
        return {}, {"source": "watch"}
    return await routers.trend_from(config, ask, live)


async def watch_document(ctx: Context) -> dict[str, Any] | None:
    """The post-switch watch as /api/status shows it (state/watch.py's words)."""
    defaults = thresholds(ctx.config.router)
    return watching.view(
        watching.loads(await ctx.store.read_watch(), defaults),
        time.time(),
        watching.LATENCY_BUCKETS,
    )


def watch_lines(watch: dict[str, Any] | None) -> list[str]:
    if not watch:
        return []
    lines = [f"watch    {watch['line']}"]
    if watch["state"] == "watching":
        lines.append(f"         measures the {watch['measures']}")
    elif watch["state"] == "alarm":
        lines.append(
            f"         act: fix {watch['system']}, or bring {watch['previous']} back "
            f"(token-router online {watch['previous']}) and run token-router undo"
        )
    elif watch["state"] == "undone":
        lines.append(
            f"         {watch['previous']} is active again; look at {watch['system']}'s gateway"
            " and logs; `token-router history` has the evidence"
        )
    return lines


async def _releases(config: Config) -> tuple[dict[str, str | None], dict[str, str]]:
    """(system -> the release it serves, system -> that release's label)."""
    r = config.router
    store = open_release_store(redis_target(r), Keys(r.key_prefix), timeout=r.redis_timeout)
    try:
        serving = await store.system_releases(config.system_ids)
        labels = {}
        for system, release in serving.items():
            meta = None if release is None else await store.meta(release)
            if meta is not None and meta.label:
                labels[system] = meta.label
        return serving, labels
    except StoreUnavailable:
        return {}, {}
    finally:
        await store.close()


def status_lines(doc: dict[str, Any], now: float) -> list[str]:
    """The status document as text: the view model's words (router/systems/view.py), as the page and
    the API show them."""
    lines = [f"store    {doc['store']}", f"active   {doc['active']}: {doc['headline']}"]
    if doc["refused"] and doc["refused"]["reason"] == "offline-mark":
        lines.append(
            f"REFUSED  {doc['refused']['value']!r} in the offline set (added outside "
            "token-router): it is the active system and stays online; switch first, or "
            f"token-router offline {doc['refused']['value']} --force"
        )
    elif doc["refused"]:
        lines.append(
            f"REFUSED  active holds {doc['refused']['value']!r} ({doc['refused']['reason']}); "
            f"routers stay on {doc['active']!r}"
        )
    for problem in doc.get("problems") or ():
        lines.append(f"PROBLEM  {problem['message']}")
    lines += rollout_lines(doc["rollout"], now)
    lines += watch_lines(doc.get("watch"))
    lines.append("")
    lines.append(
        f"{'SYSTEM':<10} {'STATE':<22} {'OPEN':>5} {'GATEWAY':>7} {'ROUTER':>6}  "
        f"{'HEALTH':<8} {'RELEASE':<16} {'VERSION':<8} DRAIN"
    )
    for s in doc["systems"]:
        health = "ok" if s["health"]["ok"] else "FAILING"
        lines.append(
            f"{s['id']:<10} {s['badge']:<22} {_n(s['open']):>5} "
            f"{_n(s['gateway_open']):>7} {_n(s['router_open']):>6}  "
            f"{health:<8} {s['release'] or '-':<16} {s['version'] or '-':<8} "
            f"{s['estimate'] or '-'}".rstrip()
        )
        if not s["health"]["ok"]:
            lines.append(f"{'':<10} health: {s['health']['error']}")
        if s["gateway_error"]:
            lines.append(f"{'':<10} gateway count unavailable: {s['gateway_error']}")
    lines.append(
        "(OPEN decides drain: the gateway's count where stats_url answers, else the router's;"
        " DRAIN: the rate it falls and the time to 0, or stalled)"
    )
    if doc.get("trend_from"):
        lines.append(f"(DRAIN: {routers.trend_line(doc['trend_from'])})")
    lines.append("")
    instances = doc["instances"]
    behind = [i["id"] for i in instances if not i["current"]]
    lines.append(f"instances: {fleet_summary(len(instances), behind)}")
    for i in instances:
        applied = i.get("applied") or {}
        mark = "" if i["current"] else "  BEHIND"
        lead = "  leader" if i.get("leader") else ""
        lines.append(
            f"  {i['id']:<32} v{i.get('version', '?'):<8} active {applied.get('active', '?'):<6} "
            f"gen {applied.get('generation', 0):<5} up {_age(now - float(i.get('started', now)))}"
            f"{lead}{mark}"
        )
    if doc["history"]:
        lines.append("")
        lines.append("last changes:")
        for e in doc["history"]:
            entry = AuditEntry(
                e["id"],
                e["time"],
                e["action"],
                e["source"],
                e["from"] or "",
                e["to"],
                e.get("reason") or "",
                bool(e.get("forced")),
            )
            lines.append("  " + audit_line(entry))
    return lines


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
