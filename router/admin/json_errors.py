"""The admin listener's error answers: JSON with a stable code, like the proxy's.

aiohttp's own 404/405/413 become the same JSON as our `RequestError`s, and a missing or wrong
token says how to authenticate (`WWW-Authenticate`).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from router.errors import BodyTooLarge, MethodNotAllowed, NotFound, RequestError, Unauthorized
from router.responses import error_response

MAX_BODY = 64 * 1024  # the admin app's client_max_size: bodies here are a few fields


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
    except web.HTTPRequestEntityTooLarge:
        return error_response(BodyTooLarge(f"the body is larger than {MAX_BODY} bytes"))
    except web.HTTPNotFound:
        return error_response(NotFound(f"no admin route {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        allowed = tuple(sorted(exc.allowed_methods))
        return error_response(
            MethodNotAllowed(f"{request.method} is not allowed here", allowed=allowed)
        )
