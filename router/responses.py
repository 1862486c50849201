"""Errors as HTTP answers: one JSON shape for both listeners (proxy and admin).

`RequestError` (errors.py) says what went wrong; this says how it looks on the wire, so the
admin listener answers its errors like the proxy without importing the proxy.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from router.errors import MethodNotAllowed, RequestError, TooManyAttempts

SYSTEM_HEADER = "X-Token-Router-System"
JSON_TYPE = "application/json"


def error_response(exc: RequestError) -> web.Response:
    headers = {}
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(int(exc.retry_after) + 1)
    if exc.system is not None:
        headers[SYSTEM_HEADER] = exc.system
    return web.Response(
        status=exc.status, body=orjson.dumps(exc.to_json()), content_type=JSON_TYPE, headers=headers
    )
