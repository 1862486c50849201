"""What the admin page shows, kept live: one document, one sampler, one event stream.

`live_document` is `/api/status` plus what an operator watches on the page: gateway health,
release per system, token requests per second, a short trend of open items and the last
audit entries. `/api/live` answers it once; `/api/events` streams it (server-sent events) at
once on every state change (the state watcher's listener), and every `HEARTBEAT` seconds
otherwise, so a silent stream means a lost feed, which the page shows.

Rates and the trend are sampled by this process: with `--workers N` each worker sees the
requests it served, and the page says "this instance".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from router.admin.api import status_document, system_reports
from router.admin.app_keys import AUTH, DRAIN, HEALTH, LIVE, RUNTIME
from router.admin.auth import BY_SESSION
from router.admin.feed import TREND_POINTS
from router.admin.guarded_api import instances_document
from router.admin.models import Expired, Live
from router.admin.spec import Access, Content, Operation, ref
from router.cancellation import stop_tasks
from router.errors import StoreUnavailable
from router.runtime import Runtime
from router.switching import operations
from router.systems.reports import audit_json

log = logging.getLogger("router.admin.live")

HEARTBEAT = 2.0  # seconds between unchanged updates; the page calls the feed lost after 3 missed
AUDIT_SHOWN = 10
DRAIN_SAMPLE = 2.0  # seconds between samples of a drain in progress (router/systems/drain.py)
IDLE_SAMPLE = 10.0  # seconds between samples while nothing drains


def release_info(runtime: Runtime, system: str) -> dict[str, Any]:
    """The release a system serves: id (content digest), human label and last check error.

    Read defensively: release fingerprinting may be switched off (no release_paths) or not
    have run yet; then the page says "unknown" and falls back to the configured label.
    """
    release: str | None = None
    label: str | None = None
    error: str | None = None
    view = runtime.releases.view
    with contextlib.suppress(Exception):
        release = view.release_of(system)
        label = view.label_of(system)
        error = runtime.releases.checker.errors.get(system) or None
    if label is None:
        label = runtime.config.systems[system].version or None
    return {"id": release or None, "label": label, "error": error}


async def live_document(app: web.Application) -> dict[str, Any]:
    runtime = app[RUNTIME]
    feed = app[LIVE]
    prober = app[HEALTH]
    prober.demand()
    doc = await status_document(app)
    rates = feed.rates()
    health = prober.to_json()
    for system in doc["systems"]:
        sid = system["id"]
        system["release"] = release_info(runtime, sid)
        system["health"] = health[sid]
        system["rate"] = rates[sid]
        # The deciding drain count as sampled here (router/systems/drain.py), last 2 minutes.
        system["trend"] = [count for _, count in app[DRAIN].samples(sid)][-TREND_POINTS:]
    try:
        doc["audit"] = audit_json(await runtime.store.audit(AUDIT_SHOWN))
        doc["audit_error"] = None
    except StoreUnavailable as exc:
        doc["audit"] = None
        doc["audit_error"] = str(exc)
    try:
        doc["rollout"] = await operations.rollout_view(runtime.store, time.time())
        doc["instances"] = await instances_document(runtime)
    except StoreUnavailable:
        doc["rollout"] = doc["instances"] = None
    doc["rates_scope"] = "this instance"
    doc["now"] = time.time()
    return doc


async def live(request: web.Request) -> web.Response:
    """GET /api/live: the page's whole document once (for scripts and a polling client)."""
    return web.Response(
        body=orjson.dumps(await live_document(request.app)),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _event(name: str, data: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def events(request: web.Request) -> web.StreamResponse:
    """GET /api/events: server-sent events; `status` carries the live document."""
    app = request.app
    runtime = app[RUNTIME]
    feed = app[LIVE]
    auth = app[AUTH]
    by_session = request.get(BY_SESSION, False)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx in front must not buffer the stream
        }
    )
    await response.prepare(request)
    try:
        await response.write(b"retry: 2000\n\n")
        while not (feed.stopping or runtime.stopping):
            if by_session and await auth.session(request) is None:
                await response.write(_event("expired", {"message": "log in again"}))
                break
            changed = feed.changed  # taken first: a change while we build is not missed
            await response.write(_event("status", await live_document(app)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), HEARTBEAT)
    except ConnectionResetError:
        pass  # the browser went away (closed tab, navigation): nothing left to say
    return response


def _sse_event(name: str, model: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data"],
        "description": f"`event: {name}`, data: {model.__name__}",
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": ref(model),
            },
        },
    }


# One event of the stream. OpenAPI 3.1 has no keyword for the items of a stream; the common
# reading (schemathesis's too, which checks every event it receives with it) is that the
# `schema` of text/event-stream describes one event: its `event` name and its `data`, here a
# JSON document whose schema `contentSchema` names. A block that only sets `retry` (the
# first) is not an event (the SSE standard dispatches nothing for it).
EVENT_SCHEMA: dict[str, Any] = {
    "oneOf": [_sse_event("status", Live), _sse_event("expired", Expired)],
}

OPERATIONS = (
    Operation(
        "GET",
        "/api/live",
        live,
        summary="The admin page's document: status plus health, releases, rates, trend and "
        "recent audit entries",
        tag="status",
        access=Access.READ,
        ok=Live,
        ok_description="The live document.",
    ),
    Operation(
        "GET",
        "/api/events",
        events,
        summary="The live document as server-sent events",
        description=f"`retry: 2000` first; then `event: status` with the live document (JSON, "
        f"schema Live) at once, on every change and every {HEARTBEAT:g} s; `event: expired` "
        "(JSON, schema Expired) when the login session of a cookie-authenticated stream "
        "ends, which closes the stream. The schema describes one event.",
        tag="status",
        access=Access.READ,
        ok=Content("text/event-stream", EVENT_SCHEMA, models=(Live, Expired)),
        ok_description="An endless event stream.",
    ),
)


async def sample_drains(
    app: web.Application, every: float = DRAIN_SAMPLE, idle: float = IDLE_SAMPLE
) -> None:
    """Sample the deciding counts whether anyone asks or not: every `every` seconds while a
    system drains, every `idle` seconds otherwise (the routers' counts are written behind the
    answers, so a drain can show only after the switch that began it), and at once on a
    change of state. `/api/status`, `/metrics` and a page opened mid-drain then show the
    rate, the estimate and a stall measured from the start, not "measuring the rate"."""
    feed = app[LIVE]
    while not feed.stopping:
        changed = feed.changed
        draining = False
        try:
            view, _, _ = await system_reports(app)
            # An unknown count (Redis just restored, a stats_url failing) may hide a drain.
            draining = any(d.open != 0 and not d.receives for d in view.systems)
        except Exception:  # a surprise must not end the sampling for good
            log.exception("sampling the drain counts failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), every if draining else idle)


async def live_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx of the prober and the sampler: started with the admin app, cancelled and
    awaited when it stops; the state listeners are removed with them."""
    holder = app[RUNTIME].holder
    feed = app[LIVE]
    holder.listeners.append(feed.on_snapshot)
    holder.health_listeners.append(feed.on_store_health)
    tasks = [
        asyncio.create_task(app[HEALTH].run(), name="admin-health-prober"),
        asyncio.create_task(feed.run(), name="admin-live-sampler"),
        asyncio.create_task(sample_drains(app), name="admin-drain-sampler"),
    ]
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            holder.listeners.remove(feed.on_snapshot)
        with contextlib.suppress(ValueError):
            holder.health_listeners.remove(feed.on_store_health)
        await stop_tasks(tasks)


async def stop_streams(app: web.Application) -> None:
    """on_shutdown: end every event stream so the listener can close without waiting."""
    feed = app[LIVE]
    feed.stopping = True
    feed.notify()
