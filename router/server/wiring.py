"""The one wiring point: from a `Config` to the two aiohttp applications of one process.

Everything that connects one part to another is here: the store and state holder shared by
both listeners, the metrics fed by the state and the release cache, the admin page's sampler
and prober, and the app keys the handlers read. The parts themselves take what they need as
arguments and import no wiring; `serve.py` only runs the result.

The proxy listener is no Application: aiohttp's low-level `web.Server` runs the one
`ProxyHandler` (routing.classify knows the route table), so no URL dispatcher or middleware
chain sits on the hot path (issue 14: CPU per request). The admin app is handed the same
runtime and only reads it, so the two listeners can never disagree; `serve.RouterServer`
starts the runtime before the listeners and closes it after the proxy listener.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from router.admin import page
from router.admin.app_keys import AUTH, DRAIN, HEALTH, LIVE, OPENAPI, RUNTIME
from router.admin.assets import Assets, find_assets
from router.admin.auth import AdminAuth, admin_access
from router.admin.feed import LiveFeed
from router.admin.headers import security_headers
from router.admin.json_errors import MAX_BODY, json_errors
from router.admin.live import live_context, stop_streams
from router.admin.openapi import openapi_document
from router.admin.routes import OPERATIONS
from router.admin.spec import register
from router.config import Config
from router.metrics import Metrics
from router.proxy.handler import ProxyHandler
from router.proxy.upstream import Upstream
from router.releases.service import Releases
from router.runtime import Runtime, instance_name
from router.server.protocol_errors import JsonErrorServer
from router.state.affinity import Affinity
from router.state.connect import open_store
from router.state.keys import Keys
from router.state.sentinel import SENTINEL_RETRY_MAX, redis_target
from router.state.snapshot import Snapshot, StateHolder, StateWatcher
from router.state.store import StateStore
from router.switching.controller import RolloutController
from router.switching.fleet import InstanceRegistry
from router.switching.gates import Gates
from router.switching.ledger import Ledger
from router.switching.watch_driver import PostSwitchWatch, retention
from router.systems.drain import DrainHistory
from router.systems.prober import GatewayProber


def _count_change(metrics: Metrics, old: Snapshot, new: Snapshot) -> None:
    if new.active != old.active:
        metrics.on_switch()
    if new.refused is not None and new.refused != old.refused:
        metrics.on_refusal()


def newly_routed(old: Snapshot, new: Snapshot) -> list[str]:
    """Systems that new sessions go to now and did not before: the active system after a
    change (from any source), a rollout's target when the rollout starts."""
    out = [new.active] if new.active != old.active else []
    target = new.rollout.target if new.rollout is not None else None
    before = old.rollout.target if old.rollout is not None else None
    if target is not None and target != before and target not in out:
        out.append(target)
    return out


def build_runtime(config: Config, store: StateStore | None = None) -> Runtime:
    """The resources both listeners share, connected but not started."""
    r = config.router
    keys = Keys(r.key_prefix)
    if store is None:
        store = open_store(
            redis_target(r), keys, timeout=r.redis_timeout, keyspace_events=r.keyspace_events
        )
    holder = StateHolder(current=Snapshot(active=config.default_system))
    instance = instance_name()
    watcher = StateWatcher(
        store,
        holder,
        config.system_ids,
        instance=instance,
        resync_interval=r.resync_interval,
        # Behind Sentinel a failover ends within a second or two: retry often enough to
        # follow the new master within a second of its promotion.
        retry_max=min(r.redis_retry_max, SENTINEL_RETRY_MAX)
        if r.redis_sentinels
        else r.redis_retry_max,
    )
    affinity = Affinity(
        store,
        holder,
        cache_size=r.affinity_cache_size,
        ttl=r.affinity_ttl,
        shortcode_ttl=r.shortcode_ttl,
        instance=instance,
    )
    # Filled in Runtime.start(); the release service fetches libraries through the same pools.
    upstreams: dict[str, Upstream] = {}
    releases = Releases.create(config, keys, upstreams)
    metrics = Metrics()
    releases.files.on_lookup = metrics.on_release_lookup
    holder.listeners.append(lambda old, new: _count_change(metrics, old, new))
    holder.listeners.append(lambda old, new: releases.follower.check_soon(newly_routed(old, new)))
    # Guarded switching: the gates (the process's one gateway prober, the admin page's too,
    # and the release checker's fingerprint), the rollout controller (counts this process's
    # token requests per step, competes for the leader lock) and the heartbeat.
    started = time.time()
    gates = Gates(GatewayProber(config.systems), fingerprint=releases.checker.fingerprint_now)
    controller = RolloutController(store, holder, config, gates, metrics.local, instance=instance)
    registry = InstanceRegistry(
        store,
        holder,
        instance=instance,
        started=started,
        interval=r.heartbeat_interval,
        is_leader=lambda: controller.leading,
    )
    # The post-switch watch: every instance counts into the traffic ledger, the leader
    # judges (and the rollout controller reads the same ledger for step latencies).
    ledger = Ledger(store, metrics.local, metrics.latency_counts, retention=retention(r))
    controller.ledger = ledger
    watch = PostSwitchWatch(
        store,
        config,
        gates,
        ledger,
        instance=instance,
        is_leader=lambda: controller.leading,
    )
    holder.listeners.append(controller.on_snapshot)
    holder.listeners.append(registry.on_snapshot)
    return Runtime(
        config,
        store,
        holder,
        watcher,
        affinity,
        releases,
        upstreams,
        metrics=metrics,
        instance=instance,
        started_at=started,
        gates=gates,
        registry=registry,
        controller=controller,
        watch=watch,
    )


def create_proxy_server(runtime: Runtime, handler: ProxyHandler, **kwargs: Any) -> web.Server:
    """The proxy listener: aiohttp's low-level server running the one handler.

    `kwargs` go to aiohttp's request handler (access log settings). Must be called with the
    event loop running (aiohttp's Server binds to it).
    """
    max_body = runtime.config.router.max_body_size

    def request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # aiohttp itself refuses bodies over client_max_size; the handler turns that into
        # the 413 JSON answer (and checks Content-Length first, before reading anything).
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=max_body,
        )

    return JsonErrorServer(handler, request_factory=request, **kwargs)


def create_admin_app(runtime: Runtime, assets: Assets | None = None) -> web.Application:
    """The admin listener: health, JSON API, the operator's page and its live feed."""
    r = runtime.config.router
    auth = AdminAuth.from_tokens(r.operators(), runtime.store, r.throttle_limits())
    # json_errors outermost, so the access check's refusals are JSON too; every /api/ route
    # is authenticated before its handler runs (admin/auth.py).
    app = web.Application(middlewares=[json_errors, admin_access(auth)], client_max_size=MAX_BODY)
    app[AUTH] = auth
    app[RUNTIME] = runtime
    # Every API route comes from its declaration, which the document is built from too.
    register(app, OPERATIONS)
    app[OPENAPI] = openapi_document(OPERATIONS, runtime.config.system_ids)
    # The operator's page: live feed, the runtime's gateway prober (its loop runs in
    # live_context; the runtime closes it), templates, static assets, login.
    assert runtime.gates is not None
    prober = runtime.gates.prober
    feed = LiveFeed(runtime)
    prober.listeners.append(feed.notify)
    app[HEALTH] = prober
    app[LIVE] = feed
    app[DRAIN] = DrainHistory(runtime.config.router.drain_stall_after)
    page.add_routes(app, assets or find_assets())
    app.cleanup_ctx.append(live_context)
    app.on_shutdown.append(stop_streams)
    app.on_response_prepare.append(security_headers)
    return app


@dataclass
class Wired:
    """One process's applications, ready for runners."""

    runtime: Runtime
    proxy: ProxyHandler
    admin_app: web.Application


def wire(config: Config, store: StateStore | None = None) -> Wired:
    runtime = build_runtime(config, store)
    return Wired(runtime, proxy_handler(runtime), create_admin_app(runtime))


def proxy_handler(runtime: Runtime) -> ProxyHandler:
    """The proxy listener's handler, given the parts of the runtime it uses."""
    return ProxyHandler(
        runtime.config,
        holder=runtime.holder,
        store=runtime.store,
        affinity=runtime.affinity,
        upstreams=runtime.upstreams,
        budget=runtime.answer_budget,
        observe=runtime.metrics.observe,
        release_of=runtime.releases.view.release_of,
        label_of=runtime.releases.view.label_of,
        serve_release=runtime.releases.files.respond,
    )
