"""Logging: text for people at a terminal, JSON lines (one object per line) for collectors.

One line per proxied request comes from `AccessLogger` (aiohttp's access-log hook), with
the system that answered and the request id the router propagated upstream.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

# Attributes every LogRecord has; anything else was passed with `extra=` and is data.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s")


def setup_logging(log_format: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's own access logger is replaced by ours; its server errors stay visible.
    logging.getLogger("aiohttp.access").propagate = True


class ProtocolErrorFilter(logging.Filter):
    """One line, no traceback, for a request aiohttp's parser refused (oversized header or
    URL, malformed line...): that is the client's mistake or a probe, and a traceback per
    request would let anyone flood the log. The offending bytes are not logged either (they
    may be a header carrying a credential): the error's class and status say enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "refused a malformed request from %s: %s (HTTP %s)"
            record.args = (peer, type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True


_PROTOCOL_FILTER = ProtocolErrorFilter()


def quiet_protocol_errors() -> None:
    """Install ProtocolErrorFilter on aiohttp's server logger (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if _PROTOCOL_FILTER not in logger.filters:
        logger.addFilter(_PROTOCOL_FILTER)


# A token delete names the session token in its path (routing.DELETE_PREFIX; not imported:
# logging sits below routing): logs show a short prefix to follow a request, never the token.
_TOKEN_PATH = "/gateway/sessions/session/id/"
_SHOWN = 6


def loggable_path(path: str) -> str:
    """`path` as logs may show it: a session token in it cut to its first characters."""
    if path.startswith(_TOKEN_PATH) and len(path) > len(_TOKEN_PATH) + _SHOWN:
        return path[: len(_TOKEN_PATH) + _SHOWN] + "..."
    return path


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, system, duration, request id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        system = response.headers.get("X-Token-Router-System", "-")
        path = loggable_path(request.path)
        request_id = response.headers.get("X-Request-Id", "-")
        self.logger.info(
            '%s "%s %s" %d %s %.1fms %s',
            request.remote,
            request.method,
            path,
            response.status,
            system,
            time_ * 1000,
            request_id,
            extra={
                "remote": request.remote,
                "method": request.method,
                "path": path,
                "status": response.status,
                "system": system,
                "duration_ms": round(time_ * 1000, 3),
                "request_id": request_id,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def new_request_id() -> str:
    # 16 hex digits from the OS: unique enough to follow one request through the logs of
    # the router and the gateway, and cheaper than uuid4 on the hot path.
    return os.urandom(8).hex()


def request_id(incoming: str | None) -> str:
    """The caller's X-Request-Id when it is sane (short, printable), else a new one."""
    if incoming and len(incoming) <= 128 and incoming.isprintable() and " " not in incoming:
        return incoming
    return new_request_id()
