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
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from router.admin.api import status_document
from router.admin.auth import current_session, presented_token, require_reader
from router.admin.keys import PROXY, RUNTIME
from router.errors import StoreUnavailable
from router.gateways.prober import HealthProber
from router.gateways.reports import audit_json
from router.proxy import ProxyHandler
from router.routing import Route
from router.runtime import Runtime
from router.tasks import stop_tasks

HEARTBEAT = 2.0  # seconds between unchanged updates; the page calls the feed lost after 3 missed
AUDIT_SHOWN = 10
RATE_WINDOW = 10  # seconds of request counts a rate is computed over
TREND_POINTS = 60
TREND_EVERY = 2.0  # seconds between trend samples: TREND_POINTS x 2 s = the last 2 minutes
TOKEN_ROUTE = Route.TOKEN_CREATE.value


class LiveFeed:
    """Samples rates and the open-items trend, and wakes event streams on changes."""

    def __init__(
        self,
        runtime: Runtime,
        proxy: ProxyHandler,
        prober: HealthProber,
        *,
        sample_every: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self.proxy = proxy
        self.prober = prober
        self.sample_every = sample_every
        self.systems = runtime.config.system_ids
        self.counts: deque[tuple[float, dict[str, tuple[int, int]]]] = deque(
            maxlen=max(2, int(RATE_WINDOW / sample_every) + 1)
        )
        self.trend: dict[str, deque[int | None]] = {
            sid: deque(maxlen=TREND_POINTS) for sid in self.systems
        }
        self.stopping = False
        self._changed = asyncio.Event()
        self._last_trend = 0.0

    # --- change notification ---------------------------------------------------------

    def notify(self) -> None:
        """Wake every stream now; streams that were woken keep their wake-up."""
        self._changed.set()
        self._changed = asyncio.Event()

    def on_snapshot(self, previous: object, current: object) -> None:
        self.notify()

    def on_store_health(self, degraded: bool) -> None:
        self.notify()

    @property
    def changed(self) -> asyncio.Event:
        return self._changed

    # --- sampling ----------------------------------------------------------------------

    def totals(self) -> dict[str, tuple[int, int]]:
        """(token requests, all proxied requests) per system, since this process started."""
        out = {sid: (0, 0) for sid in self.systems}
        for (route, system, _status), n in list(self.proxy.requests.items()):
            token, every = out.get(system, (0, 0))
            out[system] = (token + (n if route == TOKEN_ROUTE else 0), every + n)
        return out

    def sample_counts(self, now: float) -> None:
        self.counts.append((now, self.totals()))

    def rates(self) -> dict[str, dict[str, float]]:
        """Requests per second per system over the sampled window (0 until two samples)."""
        if len(self.counts) < 2:
            return {sid: {"token": 0.0, "all": 0.0} for sid in self.systems}
        (t0, first), (t1, last) = self.counts[0], self.counts[-1]
        span = max(t1 - t0, 1e-6)
        out = {}
        for sid in self.systems:
            a, b = first.get(sid, (0, 0)), last.get(sid, (0, 0))
            out[sid] = {
                "token": round((b[0] - a[0]) / span, 2),
                "all": round((b[1] - a[1]) / span, 2),
            }
        return out

    async def sample_trend(self) -> None:
        if self.runtime.stopping:
            # The proxy listener closes the store first (serve.py); a read now would only
            # open a new connection to a store that is going away.
            return
        try:
            counts = await self.runtime.store.open_counts(self.systems, time.time())
        except StoreUnavailable:
            counts = {}
        for sid in self.systems:
            self.trend[sid].append(counts.get(sid))

    async def run(self) -> None:
        """The sampler (admin app cleanup_ctx): counts every second, the trend every 2 s."""
        while True:
            now = time.monotonic()
            self.sample_counts(now)
            if now - self._last_trend >= TREND_EVERY:
                self._last_trend = now
                await self.sample_trend()
            await asyncio.sleep(self.sample_every)


LIVE = web.AppKey("admin_live", LiveFeed)
HEALTH = web.AppKey("admin_health", HealthProber)


def release_info(runtime: Runtime, proxy: ProxyHandler, system: str) -> dict[str, Any]:
    """The release a system serves: id (content digest), human label and last check error.

    Read defensively: release fingerprinting may be switched off (no release_paths) or not
    have run yet; then the page says "unknown" and falls back to the configured label.
    """
    release: str | None = None
    label: str | None = None
    error: str | None = None
    releases = getattr(runtime, "releases", None)
    with contextlib.suppress(Exception):
        if releases is not None:
            release = releases.release_of(system)
            label = releases.label_of(system)
            error = releases.errors.get(system) or None
        else:
            release = proxy.release_of(system)
    if label is None:
        label = runtime.config.systems[system].version or None
    return {"id": release or None, "label": label, "error": error}


async def live_document(app: web.Application) -> dict[str, Any]:
    runtime = app[RUNTIME]
    proxy = app[PROXY]
    feed = app[LIVE]
    prober = app[HEALTH]
    prober.demand()
    doc = await status_document(runtime)
    rates = feed.rates()
    health = prober.to_json()
    for system in doc["systems"]:
        sid = system["id"]
        system["release"] = release_info(runtime, proxy, sid)
        system["health"] = health[sid]
        system["rate"] = rates[sid]
        system["trend"] = list(feed.trend[sid])
    try:
        doc["audit"] = audit_json(await runtime.store.audit(AUDIT_SHOWN))
        doc["audit_error"] = None
    except StoreUnavailable as exc:
        doc["audit"] = None
        doc["audit_error"] = str(exc)
    doc["rates_scope"] = "this instance"
    doc["now"] = time.time()
    return doc


def _reader(request: web.Request) -> None:
    require_reader(request, request.app[RUNTIME].config.router.admin_token)


async def live(request: web.Request) -> web.Response:
    """GET /api/live: the page's whole document once (for scripts and a polling client)."""
    _reader(request)
    return web.Response(
        body=orjson.dumps(await live_document(request.app)),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _event(name: str, data: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def events(request: web.Request) -> web.StreamResponse:
    """GET /api/events: server-sent events; `status` carries the live document."""
    _reader(request)
    app = request.app
    runtime = app[RUNTIME]
    feed = app[LIVE]
    token = runtime.config.router.admin_token
    by_session = presented_token(request) is None
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
            if by_session and current_session(request, token) is None:
                await response.write(_event("expired", {"message": "log in again"}))
                break
            changed = feed.changed  # taken first: a change while we build is not missed
            await response.write(_event("status", await live_document(app)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), HEARTBEAT)
    except ConnectionResetError:
        pass  # the browser went away (closed tab, navigation): nothing left to say
    return response


async def live_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx of the prober and the sampler: started with the admin app, cancelled and
    awaited when it stops; the state listeners are removed with them."""
    holder = app[RUNTIME].holder
    feed = app[LIVE]
    holder.add_listener(feed.on_snapshot)
    holder.health_listeners.append(feed.on_store_health)
    tasks = [
        asyncio.create_task(app[HEALTH].run(), name="admin-health-prober"),
        asyncio.create_task(feed.run(), name="admin-live-sampler"),
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
