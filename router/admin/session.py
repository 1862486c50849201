"""Admin login sessions: a signed, stateless cookie naming its operator, and CSRF tokens.

Why stateless: with `--workers N` the admin port is shared by N processes (SO_REUSEPORT), and
many router instances may sit behind one balancer, so a session held in one process's memory
would be unknown to the next request's process. The cookie carries
`v2.<expiry>.<nonce>.<operator>` and an HMAC-SHA256 of it, keyed by a key derived from *that
operator's* token, so every process and instance verifies it alike, and rotating one
operator's token ends that operator's sessions at once (the others' stay valid).

The CSRF token of a session is HMAC(key, "csrf." + nonce): unguessable without the key, bound
to that one session, and checkable by any process without storage (the synchronizer-token
pattern without a server-side table). The login form has its own signed, short-lived token,
keyed by all operators' tokens together (the form does not know yet who logs in).

The cookie holds no secret: a token itself never leaves the login form's POST body. Logout
deletes the cookie and ends the session on the server: its nonce is kept in Redis for the
lifetime it had left (`<prefix>:session:revoked:<nonce>`, auth.AdminAuth.end), so a saved
copy is refused by every worker and instance. Rotating a token revokes everything signed
with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from router.config import Secret

COOKIE = "tokenrouter_admin"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
LIFETIME = 8 * 3600  # one working shift; then log in again
LOGIN_FORM_LIFETIME = 3600
_VERSION = "v2"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Session:
    expires: int
    nonce: str
    operator: str = "admin"


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

    def issue(self, operator: str = "admin", now: float | None = None) -> tuple[str, Session]:
        """A new session of `operator`: (cookie value, session)."""
        now = time.time() if now is None else now
        session = Session(
            expires=int(now) + self.lifetime, nonce=secrets.token_urlsafe(18), operator=operator
        )
        payload = f"{_VERSION}.{session.expires}.{session.nonce}.{operator}"
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value stands for, or None if forged, malformed or expired."""
        parts = split_cookie(cookie)
        if parts is None:
            return None
        payload = ".".join(parts[:4])
        if not hmac.compare_digest(parts[4].encode(), self._sign(payload).encode()):
            return None
        try:
            expires = int(parts[1])
        except ValueError:
            return None
        now = time.time() if now is None else now
        if expires <= now:
            return None
        return Session(expires=expires, nonce=parts[2], operator=parts[3])

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


def split_cookie(cookie: str | None) -> list[str] | None:
    """The five dot-separated parts of a well-formed cookie value, else None."""
    if not cookie or len(cookie) > 256:
        return None
    parts = cookie.split(".")
    if len(parts) != 5 or parts[0] != _VERSION:
        return None
    return parts


class Sessions:
    """Sessions of every operator: one signer per operator's token, one for the login form."""

    def __init__(self, operators: Mapping[str, Secret], lifetime: int = LIFETIME) -> None:
        self._signers = {name: SessionSigner(token, lifetime) for name, token in operators.items()}
        # The login form's key depends on every token: rotating any one expires open forms.
        joined = "\0".join(f"{n}={t.reveal()}" for n, t in sorted(operators.items()))
        self._form = SessionSigner(Secret(joined), lifetime) if operators else None

    @property
    def enabled(self) -> bool:
        return bool(self._signers)

    def issue(self, operator: str, now: float | None = None) -> tuple[str, Session]:
        return self._signers[operator].issue(operator, now)

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        parts = split_cookie(cookie)
        signer = None if parts is None else self._signers.get(parts[3])
        return None if signer is None else signer.verify(cookie, now)

    def csrf_token(self, session: Session) -> str:
        return self._signers[session.operator].csrf_token(session)

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        signer = self._signers.get(session.operator)
        return signer is not None and signer.csrf_ok(session, presented)

    def login_token(self, now: float | None = None) -> str:
        return "" if self._form is None else self._form.login_token(now)

    def login_token_ok(self, presented: str | None, now: float | None = None) -> bool:
        return self._form is not None and self._form.login_token_ok(presented, now)
