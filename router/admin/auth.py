"""Who may change state through the admin listener: the holder of `router.admin_token`.

Two ways to prove it:
- the API: `Authorization: Bearer <token>` (or HTTP Basic with the token as the password,
  for tools that only speak Basic);
- the admin page: a session cookie from the login form (session.py) *plus* the session's
  CSRF token in the `X-CSRF-Token` header, because a browser sends the cookie on its own.

Comparisons are constant-time. A request whose `Origin` names another site is refused
whatever it carries (cached Basic credentials are as ambient as a cookie). Without a
configured token every write is refused: an admin API nobody secured is not an admin API.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import urlsplit

from aiohttp import web

from router.admin.session import COOKIE, CSRF_HEADER, Session, signer_for
from router.config import Secret
from router.errors import Forbidden, Unauthorized

NEEDS_TOKEN = (
    "this action needs the admin token: Authorization: Bearer <token> (or log in on the admin page)"
)


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


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another origin.

    No `Origin` header (curl, the CLI, old browsers on GET) passes; the CSRF token is the
    real defence for the page, this is the second line. The host is compared, not the
    scheme: behind a TLS-terminating proxy the browser's https meets our http.
    """
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    host = urlsplit(origin).netloc.lower()
    hosts = {request.host.lower()}
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip().lower())
    return host in hosts


def current_session(request: web.Request, expected: Secret | None) -> Session | None:
    """The valid login session the request's cookie stands for, if any."""
    if expected is None:
        return None
    return signer_for(expected).verify(request.cookies.get(COOKIE))


def require_reader(request: web.Request, expected: Secret | None) -> None:
    """Reads of the page's live feed: the admin token or a login session (no CSRF: GET)."""
    if expected is None:
        raise Forbidden("the admin page is disabled: set router.admin_token (or admin_token_file)")
    presented = presented_token(request)
    if presented is not None:
        if not token_matches(expected, presented):
            raise Unauthorized("the admin token is wrong")
        return
    if current_session(request, expected) is None:
        raise Unauthorized(NEEDS_TOKEN)


def require_token(request: web.Request, expected: Secret | None) -> None:
    """Raise 401/403 unless the request may change state.

    Accepted: the admin token (Bearer/Basic), or a login session whose CSRF token is in the
    `X-CSRF-Token` header. A cross-origin request is refused either way.
    """
    if expected is None:
        raise Forbidden("admin writes are disabled: set router.admin_token (or admin_token_file)")
    if not same_origin(request):
        raise Forbidden("cross-origin request refused: use the admin page or the API directly")
    presented = presented_token(request)
    if presented is not None:
        if not token_matches(expected, presented):
            raise Unauthorized("the admin token is wrong")
        return
    session = current_session(request, expected)
    if session is None:
        raise Unauthorized(NEEDS_TOKEN)
    if not signer_for(expected).csrf_ok(session, request.headers.get(CSRF_HEADER)):
        raise Forbidden(
            f"CSRF token missing or wrong ({CSRF_HEADER} header): reload the admin page"
        )
