"""Admin login sessions: a signed, stateless cookie and the CSRF tokens bound to it.

Why stateless: with `--workers N` the admin port is shared by N processes (SO_REUSEPORT), and
many router instances may sit behind one balancer, so a session held in one process's memory
would be unknown to the next request's process. The cookie carries `v1.<expiry>.<nonce>` and
an HMAC-SHA256 of it; the key is derived from `router.admin_token`, so every process and
instance verifies it alike, and changing the admin token ends every session at once.

The CSRF token of a session is HMAC(key, "csrf." + nonce): unguessable without the key, bound
to that one session, and checkable by any process without storage (the synchronizer-token
pattern without a server-side table). The login form has its own signed, short-lived token.

The cookie holds no secret: the admin token itself never leaves the login form's POST body.
Logout deletes the cookie; a copied cookie stays valid until its expiry (`LIFETIME`), which is
the price of statelessness. Rotating the admin token revokes everything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from router.config import Secret

COOKIE = "tokenrouter_admin"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
LIFETIME = 8 * 3600  # one working shift; then log in again
LOGIN_FORM_LIFETIME = 3600
_VERSION = "v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Session:
    expires: int
    nonce: str


class SessionSigner:
    """Issues and verifies session cookies and CSRF tokens for one admin token."""

    def __init__(self, admin_token: Secret, lifetime: int = LIFETIME) -> None:
        # A derived key, not the token itself: a leaked signature reveals nothing usable as
        # the bearer token, and the purpose string keeps the key out of any other use.
        self._key = hmac.new(
            admin_token.reveal().encode(), b"token-router admin session v1", hashlib.sha256
        ).digest()
        self.lifetime = lifetime

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        """A new session: (cookie value, session)."""
        now = time.time() if now is None else now
        session = Session(expires=int(now) + self.lifetime, nonce=secrets.token_urlsafe(18))
        payload = f"{_VERSION}.{session.expires}.{session.nonce}"
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value stands for, or None if forged, malformed or expired."""
        if not cookie or len(cookie) > 256:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            return None
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(parts[3].encode(), self._sign(payload).encode()):
            return None
        try:
            expires = int(parts[1])
        except ValueError:
            return None
        now = time.time() if now is None else now
        if expires <= now:
            return None
        return Session(expires=expires, nonce=parts[2])

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf.{session.nonce}")

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.csrf_token(session).encode())

    def login_token(self, now: float | None = None) -> str:
        """The CSRF token of the login form: signed, expiring, not tied to a session yet."""
        now = time.time() if now is None else now
        payload = f"login.{int(now) + LOGIN_FORM_LIFETIME}.{secrets.token_urlsafe(9)}"
        return f"{payload}.{self._sign(payload)}"

    def login_token_ok(self, presented: str | None, now: float | None = None) -> bool:
        if not presented or len(presented) > 128:
            return False
        parts = presented.split(".")
        if len(parts) != 4 or parts[0] != "login":
            return False
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(parts[3].encode(), self._sign(payload).encode()):
            return False
        now = time.time() if now is None else now
        return parts[1].isdigit() and int(parts[1]) > now


@functools.lru_cache(maxsize=4)
def signer_for(admin_token: Secret) -> SessionSigner:
    """One signer per admin token (Secret is hashable; the key derivation runs once)."""
    return SessionSigner(admin_token)


@dataclass
class LoginThrottle:
    """Slows down guessing: after `limit` failed logins from one address within `window`
    seconds, further attempts from it are refused until the oldest failure ages out.

    Per process (a guesser spread over N workers gets N x limit tries per window), which is
    enough to make guessing a long random admin token hopeless, without shared state.
    """

    limit: int = 10
    window: float = 300.0
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self.failures.get(address)
        if times is None:
            return deque()
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self.failures[address]
        return times

    def retry_after(self, address: str, now: float | None = None) -> float:
        """Seconds until `address` may try again; 0 when it may try now."""
        now = time.monotonic() if now is None else now
        times = self._recent(address, now)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, self.window - (now - times[0]))

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self.failures) > 10_000:  # bounded memory under a spray of addresses
            self.failures.clear()
        self.failures.setdefault(address, deque()).append(now)

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)
