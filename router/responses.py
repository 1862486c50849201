"""Answers on the wire: errors as HTTP answers, and large bodies written without a copy.

`RequestError` (errors.py) says what went wrong; this says how it looks on the wire, so the
admin listener answers its errors like the proxy without importing the proxy.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.typedefs import LooseHeaders

from router.errors import MethodNotAllowed, Overloaded, RequestError, TooManyAttempts

SYSTEM_HEADER = "X-Token-Router-System"
JSON_TYPE = "application/json"
# A body this large is written on its own, after the headers (SeparateBody).
SEPARATE_BODY_FROM = 64 * 1024


class SeparateBody(web.Response):
    """A response whose headers are written before, and apart from, its body.

    aiohttp holds the headers back and writes them joined to the body in one new bytes
    object (on Python < 3.12.9 it will not hand the two to `writelines`): for a 1 MB library
    file that is a 1 MB copy per request, a sixth of a worker serving it (perf, issue 14).
    Flushing the headers when the response is prepared leaves the body to go out as it is,
    for one more system call, so only bodies of SEPARATE_BODY_FROM bytes and more take this
    path (`body_response`).
    """

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = await super().prepare(request)
        # aiohttp before 3.12 writes the headers at once and has no send_headers.
        send_headers = getattr(writer, "send_headers", None)
        if send_headers is not None:
            send_headers()
        return writer


def body_response(
    body: bytes, headers: LooseHeaders | None = None, status: int = 200
) -> web.Response:
    """A Response carrying `body`; a large one is written apart from its headers."""
    cls = SeparateBody if len(body) >= SEPARATE_BODY_FROM else web.Response
    return cls(status=status, body=body, headers=headers)


def error_response(exc: RequestError) -> web.Response:
    headers = {}
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, TooManyAttempts | Overloaded):
        headers["Retry-After"] = str(int(exc.retry_after) + 1)
    if exc.system is not None:
        headers[SYSTEM_HEADER] = exc.system
    return web.Response(
        status=exc.status, body=orjson.dumps(exc.to_json()), content_type=JSON_TYPE, headers=headers
    )
