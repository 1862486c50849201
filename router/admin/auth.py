"""Who may change state through the admin listener: the holder of `router.admin_token`.

The API takes it as `Authorization: Bearer <token>` (or HTTP Basic with the token as the
password, for tools that only speak Basic). Comparison is constant-time. Without a
configured token every write is refused: an admin API nobody secured is not an admin API.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from router.config import Secret
from router.errors import Forbidden, Unauthorized


def presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def token_matches(expected: Secret | None, presented: str | None) -> bool:
    if expected is None or presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.reveal().encode())


def require_token(request: web.Request, expected: Secret | None) -> None:
    """Raise 401/403 unless the request carries the admin token."""
    if expected is None:
        raise Forbidden("admin writes are disabled: set router.admin_token (or admin_token_file)")
    presented = presented_token(request)
    if presented is None:
        raise Unauthorized("this action needs the admin token: Authorization: Bearer <token>")
    if not token_matches(expected, presented):
        raise Unauthorized("the admin token is wrong")
