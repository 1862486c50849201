"""The admin listener: health and readiness probes, the JSON API (and the operator page).

Served only on `router.admin_listen`, never on the proxy port: the proxy is reachable by
web applications, the admin listener only by operators.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from router.admin import api, page, releases_api
from router.admin.headers import security_headers
from router.admin.keys import PROXY, RUNTIME
from router.admin.live import HEALTH, LIVE, LiveFeed, events, live, live_context, stop_streams
from router.assets import Assets, find_assets
from router.errors import MethodNotAllowed, NotFound, RequestError, Unauthorized
from router.gateways.prober import HealthProber
from router.proxy import ProxyHandler, error_response
from router.runtime import Runtime


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error of the admin API is JSON with a stable code, like the proxy's."""
    try:
        return await handler(request)
    except RequestError as exc:
        response = error_response(exc)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="token-router"'
        return response
    except web.HTTPNotFound:
        return error_response(NotFound(f"no admin route {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        allowed = tuple(sorted(exc.allowed_methods))
        return error_response(
            MethodNotAllowed(f"{request.method} is not allowed here", allowed=allowed)
        )


def build_admin_app(
    runtime: Runtime, proxy: ProxyHandler, assets: Assets | None = None
) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024)
    app[RUNTIME] = runtime
    app[PROXY] = proxy
    api.add_routes(app)
    releases_api.add_routes(app)
    # The operator's page: live feed, health prober, templates, static assets, login.
    prober = HealthProber(runtime.config.systems)
    feed = LiveFeed(runtime, proxy, prober)
    prober.on_change = feed.notify
    app[HEALTH] = prober
    app[LIVE] = feed
    app.router.add_get("/api/live", live)
    app.router.add_get("/api/events", events)
    page.add_routes(app, assets or find_assets())
    app.cleanup_ctx.append(live_context)
    app.on_shutdown.append(stop_streams)
    app.on_response_prepare.append(security_headers)
    return app
