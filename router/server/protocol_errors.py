"""Our own answer to a request aiohttp could not parse: JSON, never the request's bytes.

aiohttp answers a malformed request (a bad header line, an oversized head, a broken chunk)
with a text body made of its parser's message, and that message quotes the offending bytes:
a header line carrying a credential came back to whoever sent it (and to every proxy and log
on the way; issue 25). Here the answer is `{"error": "bad_request", "message": ...}` with
a fixed message per status, and the connection is closed as aiohttp does; the log line is
aiohttp's, which logs.ProtocolErrorFilter keeps to one line without the bytes.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler

from router.responses import JSON_TYPE


def error_body(status: int) -> bytes:
    """The JSON answer for a request that failed before any handler saw it."""
    if status >= 500:
        code, message = "internal_error", "the router failed on this request; it is logged"
    else:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Bad Request"
        code = "bad_request"
        message = f"malformed HTTP request ({status} {phrase}); it is not echoed back"
    return orjson.dumps({"error": code, "message": message})


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler with our error answer (module docstring)."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logging (logs.ProtocolErrorFilter makes a parse error one line without
        # its bytes); only the answer differs.
        if self._request_count == 1 and isinstance(exc, BadHttpMethod):
            self.logger.debug("Error handling request from %s", request.remote, exc_info=exc)
        else:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already sent; cannot send the error's")
        response = web.Response(status=status, body=error_body(status), content_type=JSON_TYPE)
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """A web.Server whose connections answer unparsable requests with JSON."""

    def __call__(self) -> RequestHandler:
        handler: RequestHandler = JsonErrorHandler(self, loop=self._loop, **self._kwargs)
        return handler


class JsonErrorAppRunner(web.AppRunner):
    """web.AppRunner serving its application through a JsonErrorServer."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application built its Server (with its handler and request factory): only the
        # connection handler it makes differs, so the class is all that changes.
        server.__class__ = JsonErrorServer
        return server


__all__ = ["JsonErrorAppRunner", "JsonErrorServer", "error_body"]
