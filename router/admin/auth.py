"""Who may use the admin listener, and who they are.

Credentials: every operator has a token (`[router.admin_tokens] alice = "..."`; the single
`admin_token` is the operator `admin`). Two ways to present one:
- the API: `Authorization: Bearer <token>` (or HTTP Basic with the token as the password,
  for tools that only speak Basic);
- the admin page: a session cookie from the login form (session.py), which names its
  operator, *plus* the session's CSRF token in the `X-CSRF-Token` header on writes, because a
  browser sends the cookie on its own.

How a handler uses it (the one way, for every admin route present and future):
- The middleware `admin_access(auth)` (installed by wiring.py; the app's `AdminAuth` is
  `app_keys.AUTH`) guards every path under `/api/`: no credential, 401; a
  read (GET/HEAD) needs a token or a session; anything else also needs a same-origin request
  and, for a session, its CSRF token. Only `/healthz`, `/readyz` and `/metrics` (outside
  `/api/`) answer without one. A new route registered under `/api/` is therefore protected
  without a line of its own.
- `operator_of(request)` is the name of the authenticated operator ("alice", "admin").
  `audit_source(request)` is what the audit records as the source of a page or API
  action: `"<via> (<operator>@<address>)"`, like the CLI's `"cli (<user>@<host>)"`; `via`
  is "page" for a login session's request, else "api".

Failed credentials (a wrong bearer/basic token, a wrong token in the login form) are throttled
on every route by one `SharedThrottle` (state/shared_throttle.py: fleet-wide through Redis,
per process while Redis is away) and logged with the address, route and kind, never the
presented value (a mistyped token is most of the real one). Comparisons
are constant-time. A request whose `Origin` names another site is refused on writes whatever it
carries (cached Basic credentials are as ambient as a cookie). Without any configured token the
API and the page are disabled: an admin API nobody secured is not an admin API.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from router.admin.session import COOKIE, CSRF_HEADER, Session, Sessions
from router.config import Secret
from router.errors import Forbidden, StoreUnavailable, TooManyAttempts, Unauthorized
from router.state.shared_throttle import SharedThrottle
from router.state.store import StateStore
from router.throttle import Limits

log = logging.getLogger("router.admin.auth")

NEEDS_TOKEN = (
    "this route needs an admin token: Authorization: Bearer <token> (or log in on the admin page)"
)
DISABLED = "the admin API is disabled: set router.admin_token or [router.admin_tokens]"
READ_METHODS = frozenset({"GET", "HEAD"})
OPERATOR = web.RequestKey("admin_operator", str)
BY_SESSION = web.RequestKey("admin_by_session", bool)


def presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""  # malformed Basic: a failed credential, not an absent one
        return decoded.partition(":")[2]
    return None


class Operators:
    """Token -> operator name, compared in constant time against every configured token."""

    def __init__(self, tokens: Mapping[str, Secret]) -> None:
        self._tokens = [(name, token.reveal().encode()) for name, token in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def match(self, presented: str) -> str | None:
        value = presented.encode()
        found = None
        for name, token in self._tokens:
            # No early exit: the time taken does not say which token (if any) matched.
            if hmac.compare_digest(value, token):
                found = name
        return found


@dataclass
class AdminAuth:
    """Everything the admin listener needs to authenticate: one per admin application.

    `store` holds the ended sessions (logout) for every worker and instance; `ended` is
    this process's own copy, which also answers while the store cannot."""

    operators: Operators
    sessions: Sessions
    throttle: SharedThrottle = field(
        default_factory=lambda: SharedThrottle(None, "admin", Limits())
    )
    store: StateStore | None = None
    ended: dict[str, float] = field(default_factory=dict)  # session nonce -> its expiry

    @classmethod
    def from_tokens(
        cls,
        tokens: Mapping[str, Secret],
        store: StateStore | None = None,
        limits: Limits | None = None,
    ) -> AdminAuth:
        throttle = SharedThrottle(store, "admin", limits or Limits())
        return cls(Operators(tokens), Sessions(tokens), throttle, store=store)

    @property
    def enabled(self) -> bool:
        return bool(self.operators)

    async def check_token(self, request: web.Request, presented: str, kind: str) -> str:
        """The operator `presented` belongs to; 429 while throttled, 401 (logged) if wrong."""
        address = request.remote or "unknown"
        wait = await self.throttle.retry_after(address)
        if wait > 0:
            log.warning(
                "admin credential from %s on %s %s not checked: throttled for %.0f s more",
                address,
                request.method,
                request.path,
                wait,
            )
            raise TooManyAttempts(
                f"too many failed admin credentials; try again in {wait:.0f} s",
                retry_after=wait,
            )
        name = self.operators.match(presented) if presented else None
        if name is None:
            await self.throttle.failed(address)
            # Never the presented value: a mistyped token is most of the real one.
            log.warning(
                "failed admin credential (%s) from %s on %s %s",
                kind,
                address,
                request.method,
                request.path,
            )
            raise Unauthorized("the admin token is wrong")
        await self.throttle.succeeded(address)
        return name

    async def session(self, request: web.Request) -> Session | None:
        """The valid login session the request's cookie stands for, if any: signed, not
        expired, and not ended by a logout (on any worker or instance)."""
        session = self.sessions.verify(request.cookies.get(COOKIE))
        if session is None:
            return None
        if session.nonce in self.ended:
            return None
        if self.store is not None:
            try:
                ended = await self.store.session_revoked(session.nonce)
            except StoreUnavailable as exc:
                # Fail-static like routing: a Redis outage must not lock every operator out
                # of the page; a logout made in this process still holds (`ended`).
                log.debug("could not check whether a session was ended: %s", exc)
                ended = False
            if ended:
                self._remember(session)
                return None
        return session

    async def end(self, session: Session) -> None:
        """Log `session` out everywhere: its cookie, even saved, is refused from now on."""
        self._remember(session)
        if self.store is None:
            return
        try:
            await self.store.revoke_session(session.nonce, int(session.expires - time.time()) + 1)
        except StoreUnavailable as exc:
            log.warning(
                "logout of %s holds in this process only until Redis answers: %s",
                session.operator,
                exc,
            )

    def _remember(self, session: Session) -> None:
        now = time.time()
        for nonce in [n for n, expires in self.ended.items() if expires <= now]:
            del self.ended[nonce]  # expired cookies are refused anyway
        self.ended[session.nonce] = session.expires

    async def authenticate(self, request: web.Request, *, write: bool) -> str:
        """Authenticate `request` (see the module docstring); the operator's name."""
        if not self.enabled:
            raise Forbidden(DISABLED)
        if write and not same_origin(request):
            raise Forbidden("cross-origin request refused: use the admin page or the API directly")
        presented = presented_token(request)
        if presented is not None:
            name = await self.check_token(request, presented, "bearer/basic")
            request[BY_SESSION] = False
        else:
            session = await self.session(request)
            if session is None:
                raise Unauthorized(NEEDS_TOKEN)
            if write and not self.sessions.csrf_ok(session, request.headers.get(CSRF_HEADER)):
                raise Forbidden(
                    f"CSRF token missing or wrong ({CSRF_HEADER} header): reload the admin page"
                )
            name = session.operator
            request[BY_SESSION] = True
        request[OPERATOR] = name
        return name


def admin_access(auth: AdminAuth) -> Middleware:
    """The middleware that authenticates every `/api/` request before its handler runs
    (module docstring); installed by the wiring point with the app's `AdminAuth`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            await auth.authenticate(request, write=request.method not in READ_METHODS)
        return await handler(request)

    return middleware


def operator_of(request: web.Request) -> str:
    """The authenticated operator's name ("alice"; "admin" for `admin_token`).

    Set by `admin_access` for every `/api/` request before its handler runs; a handler
    elsewhere that calls this without a credential gets the same 401 the API gives.
    """
    name = request.get(OPERATOR)
    if not isinstance(name, str):
        raise Unauthorized(NEEDS_TOKEN)
    return name


def audit_source(request: web.Request) -> str:
    """The audit's source of a page or API action: `"<via> (<operator>@<address>)"`.

    `via` is "page" when the request was authenticated by a login session (only the page
    has one), else "api": proven by the credential, never taken from what the body says."""
    via = "page" if request.get(BY_SESSION) else "api"
    return f"{via} ({operator_of(request)}@{request.remote or 'unknown'})"


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
