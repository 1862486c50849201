"""The admin listener: health and readiness probes, the JSON API (and the operator page).

Served only on `router.admin_listen`, never on the proxy port: the proxy is reachable by
web applications, the admin listener only by operators.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from router.admin import api
from router.admin.keys import PROXY, RUNTIME
from router.errors import MethodNotAllowed, NotFound, RequestError, Unauthorized
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


def build_admin_app(runtime: Runtime, proxy: ProxyHandler) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024)
    app[RUNTIME] = runtime
    app[PROXY] = proxy
    api.add_routes(app)
    return app
