"""Preview: a request names the system it wants with a credential, the preview secret.

In the header (a back end, a test web app) or, on the routes a browser loads, as a cookie
(a tester's browser previews an idle system). Wrong secrets are throttled like admin
tokens, shared by every instance through the store; an idle system previewed is marked in
the store so every surface says "preview".
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from aiohttp import web

from router.config import Config
from router.errors import PreviewRefused, StoreUnavailable, TooManyAttempts
from router.proxy.routing import Route
from router.state.shared_throttle import SharedThrottle
from router.state.store import StateStore

log = logging.getLogger("router.proxy")

# An idle system reports "preview" for this long after the last preview request.
PREVIEW_TTL = 600
PREVIEW_MARK_EVERY = 10.0
# The preview credential as a cookie ('<system>:<secret>', like the header), accepted on the
# routes a browser loads (COOKIE_ROUTES), so a tester's browser previews an idle system.
PREVIEW_COOKIE = "token_router_preview"
COOKIE_ROUTES = frozenset({Route.LIBRARY, Route.CURRENT})


class Preview:
    """The preview credential of one router process: checked, throttled, marked."""

    def __init__(self, config: Config, store: StateStore) -> None:
        r = config.router
        self.config = config
        self.store = store
        self.known = frozenset(config.systems)
        self.header = r.preview_header
        self.secret = r.preview_secret.reveal().encode() if r.preview_secret else None
        # The preview secret is a credential too: wrong ones are throttled like admin tokens.
        self.throttle = SharedThrottle(store, "preview", r.throttle_limits())
        self._marked: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def system(self, request: web.BaseRequest, cookie: bool = False) -> str | None:
        """The system a preview credential names, or None without one.

        In the header (a back end, a test web app) a credential that does not check out is a
        403, never an answer from the active system: the caller asked for another system and
        must learn it did not get it. A stale cookie (a tester's browser, after the secret
        changed) is ignored on the browser routes and logged: the page keeps loading."""
        value = request.headers.get(self.header)
        from_cookie = False
        if value is None and cookie and "Cookie" in request.headers:
            value = request.cookies.get(PREVIEW_COOKIE)
            from_cookie = True
        if value is None:
            return None
        name = PREVIEW_COOKIE + " cookie" if from_cookie else self.header
        address = request.remote or "unknown"
        system, _, secret = value.partition(":")
        if self.secret is None:
            self._refuse(
                from_cookie,
                f"ignored {name} from {address}: preview is not configured",
                f"{self.header} given, but preview is not configured on this router "
                "(router.preview_secret)",
            )
            return None
        wait = await self.throttle.retry_after(address)
        if wait > 0:
            if from_cookie:
                # A browser replays its cookie on every library load: ignore it, do not fail
                # the page (the secret is not checked, so guessing gains nothing).
                return None
            log.warning(
                "%s from %s not checked: throttled for %.0f s more",
                self.header,
                address,
                wait,
            )
            raise TooManyAttempts(
                f"too many wrong {self.header} secrets; try again in {wait:.0f} s",
                retry_after=wait,
            )
        if not hmac.compare_digest(secret.encode(), self.secret):
            await self.throttle.failed(address)
            self._refuse(
                from_cookie,
                f"ignored {name} from {address}: wrong secret",
                f"wrong secret in {self.header} (expected '<system>:<secret>' with "
                "router.preview_secret)",
            )
            return None
        await self.throttle.succeeded(address)
        if system not in self.known:
            self._refuse(
                from_cookie,
                f"ignored {name} from {address}: unknown system {system!r}",
                f"{self.header} names unknown system {system!r}; configured systems: "
                f"{', '.join(self.config.system_ids)}",
            )
            return None
        return system

    def _refuse(self, from_cookie: bool, logged: str, answered: str) -> None:
        log.warning("%s", logged)
        if not from_cookie:
            raise PreviewRefused(answered + ": refused, not answered by the active system")

    def mark(self, system: str) -> None:
        """Tell every instance (through the store) that `system` is being previewed.

        Written at most every PREVIEW_MARK_EVERY seconds per system and off the request path:
        the state word is for operators, no request waits for it.
        """
        now = time.monotonic()
        if now - self._marked.get(system, -PREVIEW_MARK_EVERY) < PREVIEW_MARK_EVERY:
            return
        self._marked[system] = now
        task = asyncio.create_task(self._write(system))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write(self, system: str) -> None:
        try:
            await self.store.mark_preview(system, PREVIEW_TTL)
        except StoreUnavailable as exc:
            log.warning("could not mark %s as previewed: %s", system, exc)
