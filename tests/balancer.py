"""A small test balancer, behaving like a typical nginx/HAProxy set-up in front of routers.

Round robin over the backends that pass an active health check (`GET /readyz` on each admin
listener every `interval`); a new upstream connection per request (nginx's default); a
request whose connection could not be established is retried on the next backend, which is
safe for any method because nothing was sent. Nothing else is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server"}


@dataclass
class Backend:
    proxy_url: str
    admin_url: str
    healthy: bool = True


@dataclass
class Balancer:
    backends: list[Backend]
    interval: float = 0.05
    failures: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""
    _checker: asyncio.Task[None] | None = None
    _rr: itertools.count[int] = field(default_factory=itertools.count)

    async def start(self) -> str:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=30, connect=1),
            auto_decompress=False,
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self._checker = asyncio.create_task(self._check())
        return self.url

    async def stop(self) -> None:
        if self._checker:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        if self.runner:
            await self.runner.cleanup()
        await self.session.close()

    async def _check(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as probe:
            while True:
                for backend in self.backends:
                    try:
                        async with probe.get(backend.admin_url + "/readyz") as resp:
                            backend.healthy = resp.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        backend.healthy = False
                # The health-check period, as a real balancer has one: a schedule, not a wait
                # for a condition (tests wait on `backend.healthy` itself).
                await asyncio.sleep(self.interval)

    def _order(self) -> list[Backend]:
        start = next(self._rr)
        ring = [self.backends[(start + i) % len(self.backends)] for i in range(len(self.backends))]
        return [b for b in ring if b.healthy] + [b for b in ring if not b.healthy]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        for backend in self._order():
            try:
                async with self.session.request(
                    request.method, backend.proxy_url + request.path_qs, headers=headers, data=body
                ) as resp:
                    payload = await resp.read()
                    out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}
                    return web.Response(status=resp.status, body=payload, headers=out)
            except aiohttp.ClientConnectorError:
                continue  # nothing was sent: safe to try the next backend
            except aiohttp.ClientError as exc:
                self.failures.append(f"{backend.proxy_url}: {exc!r}")
                return web.Response(status=502, text=f"balancer: {exc!r}")
        self.failures.append("no backend accepted the connection")
        return web.Response(status=503, text="balancer: no backend")
