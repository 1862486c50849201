"""The two aiohttp applications of one router process and the keys they share.

The proxy app owns the `Runtime` (its cleanup context starts and closes it); the admin app
is handed the same runtime and only reads it, so the two listeners can never disagree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from router.admin import build_admin_app
from router.proxy import ProxyHandler
from router.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
PROXY = web.AppKey("proxy", ProxyHandler)


def create_proxy_app(runtime: Runtime, *, handler: ProxyHandler | None = None) -> web.Application:
    """The proxy listener: one catch-all route, the route table lives in routing.classify."""
    # client_max_size makes aiohttp itself refuse larger bodies; the handler turns that
    # into the 413 JSON answer (and checks Content-Length first, before reading anything).
    app = web.Application(client_max_size=runtime.config.router.max_body_size)
    proxy = handler or ProxyHandler(runtime)
    app[RUNTIME] = runtime
    app[PROXY] = proxy
    app.router.add_route("*", "/{tail:.*}", proxy.__call__)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await runtime.close()

    app.cleanup_ctx.append(lifetime)
    return app


def create_admin_app(runtime: Runtime, proxy: ProxyHandler) -> web.Application:
    """The admin listener (health, JSON API and page: router.admin)."""
    return build_admin_app(runtime, proxy)
