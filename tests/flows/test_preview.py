"""Preview: the credential as a header everywhere and as a cookie on the routes a browser
loads, so a tester's browser previews the idle system; previewed + holding sessions shows both."""

from __future__ import annotations

import aiohttp
import orjson

from router.proxy.handler import PREVIEW_COOKIE
from router.simulator.gateway import library_files
from tests.helpers import (
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    make_config,
    wait_until,
)

AUTH = {"Authorization": "Bearer test-admin-token"}
JS = "/gateway/adapter.js"


async def test_preview_cookie_on_browser_routes_only(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, preview_secret="s3cret"))
    cookie = {"Cookie": f"{PREVIEW_COOKIE}=b:s3cret"}
    async with http.get(router.proxy_url + JS, headers=cookie) as resp:
        assert resp.status == 200
        assert resp.headers["X-Token-Router-System"] == "b"
        assert resp.headers["Cache-Control"] == "private, no-store"
        assert "Cookie" in resp.headers["Vary"]
        assert await resp.read() == library_files("2.0")[JS][0]
    async with http.get(router.proxy_url + "/router/current", headers=cookie) as resp:
        doc = await resp.json()
        assert (doc["system"], doc["reason"]) == ("b", "preview")
    # Without it, or with a wrong secret, the active system; its answer may be cached.
    async with http.get(router.proxy_url + JS) as resp:
        assert resp.headers["X-Token-Router-System"] == "a"
        assert resp.headers["Cache-Control"] == "public, max-age=60"
    async with http.get(
        router.proxy_url + JS, headers={"Cookie": f"{PREVIEW_COOKIE}=b:wrong"}
    ) as resp:
        assert resp.headers["X-Token-Router-System"] == "a"
    # Tokens are minted by back ends: the cookie does not steer them, the header does.
    async with http.post(
        router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY), headers=cookie
    ) as resp:
        assert resp.headers["X-Token-Router-System"] == "a"
    async with http.post(
        router.proxy_url + SESSION_PATH,
        data=orjson.dumps(SESSION_BODY),
        headers={"X-Token-Router-Preview": "b:s3cret"},
    ) as resp:
        assert resp.headers["X-Token-Router-System"] == "b"
    await router.server.runtime.affinity.flush()

    # b is previewed and holds the preview token: both states, on the API.
    async def both() -> bool:
        async with http.get(router.admin_url + "/api/status", headers=AUTH) as resp:
            doc = await resp.json()
        b = next(s for s in doc["systems"] if s["id"] == "b")
        return bool(b["states"] == ["preview", "draining"] and b["open"] == 1)

    await wait_until(both, timeout=10, interval=0.1)
