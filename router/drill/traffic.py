"""The drill's clients: back ends minting tokens and short codes, and browsers loading libraries.

A back end session, at the drill's rate: mint a token through one router, create a short
code, look the code up and later DELETE the token through the OTHER router (cross-instance
affinity), each follow-up checked against the system that issued it. Browsers ask
`/router/current` which libraries to load, load them through the `/v/` URL they were given
(as do some token answers, by their release header), keep the URL and reload it later: a
URL handed out before the upgrade must keep returning the same bytes after it.

The routers in rotation are what a load balancer would send to: restarting an instance
takes it out first (its deregistration), then stops it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from router.drill.report import Tally

SYSTEM_HEADER = "X-Token-Router-System"
RELEASE_HEADER = "X-Token-Router-Release"
SESSION_PATH = "/gateway/sessions/session"
LIBRARY_PATH = "/gateway/adapter.js"
TIMEOUT = 10.0
MAX_PAGES = 64  # library URLs browsers keep to reload


@dataclass
class Rotation:
    """The router URLs a balancer currently sends to."""

    urls: list[str]

    def pick(self, n: int) -> str:
        urls = self.urls
        return urls[n % len(urls)]


@dataclass
class Traffic:
    rotation: Rotation
    tally: Tally
    expected: Mapping[str, bytes]  # system -> the bytes of LIBRARY_PATH it serves
    provoked: Callable[[str], bool] = lambda system: False  # failing on purpose now?
    rng: random.Random = field(default_factory=random.Random)
    pages: list[tuple[str, str]] = field(default_factory=list)  # (url, system)
    deleted: dict[str, str] = field(default_factory=dict)  # sid -> issuing system (2xx)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _until: float = 0.0
    _hold: asyncio.Future[None] | None = None

    async def run(
        self,
        session: aiohttp.ClientSession,
        rate: float,
        until: float,
        hold: asyncio.Future[None] | None = None,
    ) -> None:
        """Start a session every 1/rate s until `until` (monotonic), and on past it while
        `hold` (the injected faults) is not done: a fault is only a fault under traffic.
        Then wait for every session to end."""
        n = 0
        started = time.monotonic()
        self._until, self._hold = until, hold
        browsers = asyncio.create_task(self._browsers(session, rate))
        while self._running():
            self._spawn(self._flow(session, n))
            n += 1
            next_at = started + n / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await browsers
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(
        self, session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
    ) -> tuple[int, str, bytes, str]:
        """(status, system header, body, release header); status 0 when no answer came."""
        try:
            async with session.request(method, url, **kwargs) as resp:
                body = await resp.read()
                return (
                    resp.status,
                    resp.headers.get(SYSTEM_HEADER, ""),
                    body,
                    resp.headers.get(RELEASE_HEADER, ""),
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return 0, "", f"{exc.__class__.__name__}: {exc}".encode(), ""

    async def _flow(self, session: aiohttp.ClientSession, n: int) -> None:
        tally = self.tally
        # Each request goes where the balancer sends it at that moment: the mint through
        # one instance, the follow-ups through the other one where there are two.
        rotation = self.rotation
        body = {
            "webAppId": "drill",
            "urlSchemeDetails": {"secure": True, "host": "drill.invalid", "port": "1"},
        }
        via = rotation.pick(n)
        status, system, raw, release = await self._call(
            session, "POST", via + SESSION_PATH, json=body
        )
        doc = _json(raw) if status == 200 else None
        sid = str(doc.get("sessionid", "")) if doc else ""
        if not sid:
            tally.fail("token", _what(status, system, raw, via), provoked=self.provoked(system))
            return
        tally.ok("token")
        tally.per_system[system] += 1
        if not sid.startswith(system + "-"):
            tally.wrong(f"token {sid} answered under {SYSTEM_HEADER}: {system}")
        if release and self.rng.random() < 0.3:
            url = f"{rotation.pick(n + 1)}/v/{release}{LIBRARY_PATH}"
            self._spawn(self._load(session, url, system, "library"))

        via = rotation.pick(n)
        status, csys, raw, _ = await self._call(
            session, "PUT", via + "/assistserver/shortcode/create"
        )
        doc = _json(raw) if status == 200 else None
        code = str(doc.get("shortCode", "")) if doc else ""
        if not code:
            what = _what(status, csys, raw, via)
            tally.fail("shortcode_create", what, provoked=self.provoked(csys))
        else:
            tally.ok("shortcode_create")
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))
            via = rotation.pick(n + 1)
            url = f"{via}/assistserver/shortcode/consumer?appkey={code}"
            status, seen, raw, _ = await self._call(session, "GET", url)
            self._follow_up("shortcode_lookup", f"code {code}", csys, status, seen, raw, via)

        await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        via = rotation.pick(n + 1)
        url = f"{via}{SESSION_PATH}/id/{sid}"
        status, seen, raw, _ = await self._call(session, "DELETE", url)
        if self._follow_up("token_delete", f"token {sid}", system, status, seen, raw, via):
            self.deleted[sid] = system

    def _follow_up(
        self, kind: str, what: str, owner: str, status: int, seen: str, raw: bytes, via: str
    ) -> bool:
        tally = self.tally
        # Any 2xx: FCSDK-API.md documents 204 for a DELETE, installations answer 200 too.
        answered = 200 <= status <= 299
        if answered and seen == owner:
            tally.ok(kind)
            return True
        if answered or (status in (403, 404) and seen and seen != owner):
            # Answered, or refused as unknown, by a system that did not issue it.
            tally.sent[kind] += 1
            tally.wrong(
                f"{kind} of {what} (issued by {owner}) answered {status} by {seen} via {via}"
            )
            return False
        tally.fail(kind, f"{what}: " + _what(status, seen, raw, via), provoked=self.provoked(seen))
        return False

    def _running(self) -> bool:
        return time.monotonic() < self._until or (self._hold is not None and not self._hold.done())

    async def _browsers(self, session: aiohttp.ClientSession, rate: float) -> None:
        """Page views at half the session rate; every other one also reloads an older page."""
        n = 0
        period = 2.0 / rate
        while self._running():
            router = self.rotation.pick(n)
            status, _, raw, _ = await self._call(session, "GET", router + "/router/current")
            doc = _json(raw) if status == 200 else None
            base = str(doc.get("base", "")) if doc else ""
            system = str(doc.get("system", "")) if doc else ""
            if not base:
                self.tally.fail("router_current", _what(status, system, raw, router))
            else:
                self.tally.ok("router_current")
                url = f"{self.rotation.pick(n + 1)}{base}{LIBRARY_PATH}"
                if await self._load(session, url, system, "library"):
                    self._remember(base, system)
            if n % 2 and self.pages:
                old_base, owner = self.rng.choice(self.pages)
                await self._load(
                    session, f"{router}{old_base}{LIBRARY_PATH}", owner, "library_reload"
                )
            n += 1
            await asyncio.sleep(period)

    def _remember(self, base: str, system: str) -> None:
        if (base, system) not in self.pages:
            self.pages.append((base, system))
            del self.pages[:-MAX_PAGES]

    async def reload_all(self, session: aiohttp.ClientSession) -> None:
        """After the upgrade: every library URL browsers were given, once more."""
        for i, (base, owner) in enumerate(list(self.pages)):
            url = f"{self.rotation.pick(i)}{base}{LIBRARY_PATH}"
            await self._load(session, url, owner, "library_reload")

    async def _load(self, session: aiohttp.ClientSession, url: str, system: str, kind: str) -> bool:
        status, _, raw, _ = await self._call(session, "GET", url)
        if status != 200:
            self.tally.fail(kind, _what(status, "", raw, url))
            return False
        self.tally.ok(kind)
        want = self.expected.get(system)
        if raw != want:
            self.tally.bad_bytes(
                f"GET {url}: {len(raw)} bytes, not {system}'s library ({len(want or b'')} bytes)"
            )
            return False
        return True


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _what(status: int, system: str, raw: bytes, via: str) -> str:
    text = raw[:160].decode(errors="replace").strip()
    answered = f"answered {status}" if status else "no answer"
    return f"{answered} from {system or '?'} via {via}: {text}"
