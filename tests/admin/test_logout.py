"""Logout ends a session on the server (issue 25, item 9), and the audit's "page" is proven by
the login session, never by a body field (item 10). Two router instances on one Redis, real
sockets, cookies handled by hand."""

from __future__ import annotations

import aiohttp
import orjson

from router.admin.session import COOKIE, CSRF_HEADER
from tests.admin.test_auth import log_in, page_csrf
from tests.helpers import ADMIN_AUTH, RunningRouter


async def test_a_saved_cookie_stops_working_after_logout_on_every_instance(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, r2 = pair
    cookie = await log_in(http, r1.admin_url)
    csrf = await page_csrf(http, r1.admin_url, cookie)
    saved = {"Cookie": f"{COOKIE}={cookie}"}
    async with http.get(r2.admin_url + "/api/status", headers=saved) as resp:
        assert resp.status == 200  # one session, valid on every instance
    async with http.post(
        r1.admin_url + "/logout", data={"csrf_token": csrf}, headers=saved, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    for router in (r1, r2):
        async with http.get(router.admin_url + "/api/status", headers=saved) as resp:
            assert resp.status == 401, router.admin_url
        async with http.post(
            router.admin_url + "/api/switch",
            data=orjson.dumps({"system": "b"}),
            headers={**saved, CSRF_HEADER: csrf},
        ) as resp:
            assert resp.status == 401
        async with http.get(router.admin_url + "/", headers=saved, allow_redirects=False) as resp:
            assert resp.status in (302, 303) and resp.headers["Location"] == "/login"
    assert r1.active == "a" and r2.active == "a"
    # A new login works as before.
    fresh = await log_in(http, r2.admin_url)
    async with http.get(
        r1.admin_url + "/api/status", headers={"Cookie": f"{COOKIE}={fresh}"}
    ) as resp:
        assert resp.status == 200


async def test_the_page_is_audited_by_its_session_not_by_a_body_field(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    url = router.admin_url
    async with http.post(
        url + "/api/switch", json={"system": "b", "via": "page"}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200
    cookie = await log_in(http, url)
    csrf = await page_csrf(http, url, cookie)
    async with http.post(
        url + "/api/switch",
        data=orjson.dumps({"system": "a", "via": "api"}),
        headers={"Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf},
    ) as resp:
        assert resp.status == 200
    async with http.get(url + "/api/audit?count=2", headers=ADMIN_AUTH) as resp:
        sources = [e["source"] for e in (await resp.json())["entries"]]
    assert sources == ["page (admin@127.0.0.1)", "api (admin@127.0.0.1)"]
