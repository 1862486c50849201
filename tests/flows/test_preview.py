"""Preview: the credential as a header everywhere and as a cookie on the routes a browser
loads, so a tester's browser previews the idle system; previewed + holding sessions shows both."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from router.proxy.preview import PREVIEW_COOKIE
from router.simulator.library import library_files
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
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = await routers(
        make_config(redis_server.url, gateways, preview_secret="s3cret-preview-0123")
    )
    cookie = {"Cookie": f"{PREVIEW_COOKIE}=b:s3cret-preview-0123"}
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
    # A stale cookie (the secret changed since) is ignored on a browser route, and logged:
    # the tester's page keeps loading.
    for stale, logged in (
        ("b:wrong", "wrong secret"),
        ("zz:s3cret-preview-0123", "unknown system 'zz'"),
    ):
        caplog.clear()
        async with http.get(
            router.proxy_url + JS, headers={"Cookie": f"{PREVIEW_COOKIE}={stale}"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["X-Token-Router-System"] == "a"
        assert f"ignored {PREVIEW_COOKIE} cookie from 127.0.0.1: {logged}" in caplog.text
        assert "s3cret-preview-0123" not in caplog.text.replace("zz:s3cret-preview-0123", "")
    # Tokens are minted by back ends: the cookie does not steer them, the header does.
    async with http.post(
        router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY), headers=cookie
    ) as resp:
        assert resp.headers["X-Token-Router-System"] == "a"
    async with http.post(
        router.proxy_url + SESSION_PATH,
        data=orjson.dumps(SESSION_BODY),
        headers={"X-Token-Router-Preview": "b:s3cret-preview-0123"},
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


async def test_a_preview_header_without_preview_configured_is_refused(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways))
    async with http.post(
        router.proxy_url + SESSION_PATH,
        data=orjson.dumps(SESSION_BODY),
        headers={"X-Token-Router-Preview": "b:anything"},
    ) as resp:
        assert resp.status == 403
        doc = await resp.json()
    assert doc == {
        "error": "preview_refused",
        "message": "X-Token-Router-Preview given, but preview is not configured on this router "
        "(router.preview_secret): refused, not answered by the active system",
    }
    # a leftover cookie on a browser route is ignored: the library still loads
    async with http.get(
        router.proxy_url + JS, headers={"Cookie": f"{PREVIEW_COOKIE}=b:anything"}
    ) as resp:
        assert (resp.status, resp.headers["X-Token-Router-System"]) == (200, "a")
