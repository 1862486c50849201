"""The admin page's security at the HTTP level: login, cookie flags, CSRF, headers, logout.

A real router (both listeners), real redis-server and simulated systems; the requests are
what a browser or an attacker's page would send, with cookies handled by hand so every
attribute is visible.
"""

from __future__ import annotations

import logging
import re
from http.cookies import SimpleCookie

import aiohttp
import orjson
import pytest

from router.admin.app_keys import TEMPLATES
from router.admin.headers import CSP
from router.admin.session import COOKIE, CSRF_HEADER, SessionSigner
from router.config import Secret
from router.throttle import PER_ADDRESS
from tests.helpers import (
    ADMIN_AUTH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
)

TOKEN = "test-admin-token"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def set_cookie_of(response: aiohttp.ClientResponse) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        cookie.load(header)
    return cookie


async def login_csrf(http: aiohttp.ClientSession, admin_url: str) -> str:
    async with http.get(admin_url + "/login") as resp:
        assert resp.status == 200
        match = CSRF_INPUT.search(await resp.text())
    assert match is not None
    return match.group(1)


async def log_in(http: aiohttp.ClientSession, admin_url: str, token: str = TOKEN) -> str:
    """Log in like the form does; the session cookie's value."""
    csrf = await login_csrf(http, admin_url)
    async with http.post(
        admin_url + "/login",
        data={"csrf_token": csrf, "token": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/"
        return set_cookie_of(resp)[COOKIE].value


async def page_csrf(http: aiohttp.ClientSession, admin_url: str, cookie: str) -> str:
    async with http.get(admin_url + "/", headers={"Cookie": f"{COOKIE}={cookie}"}) as resp:
        assert resp.status == 200
        match = CSRF_META.search(await resp.text())
    assert match is not None
    return match.group(1)


async def test_page_redirects_to_login_without_a_session(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    async with http.get(router.admin_url + "/", allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/login"
    async with http.get(
        router.admin_url + "/", headers={"Cookie": f"{COOKIE}=v1.9999999999.forged.sig"}
    ) as resp:
        assert str(resp.url).endswith("/login")


async def test_login_page_has_strict_security_headers_and_no_inline_script(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    async with http.get(router.admin_url + "/login") as resp:
        assert resp.status == 200
        html = await resp.text()
        headers = resp.headers
    assert headers["Content-Security-Policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert "frame-ancestors 'none'" in CSP
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "same-origin"
    assert CSRF_INPUT.search(html)
    # No inline script or style anywhere: every <script> has a src, no style attributes.
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert " style=" not in html


async def test_templates_load_at_the_first_page_and_stay(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    """jinja2 is loaded by the first page rendered, not at start-up (a worker's memory), and
    the JSON API and /metrics answer without it."""
    templates = router.server.admin_runner.app[TEMPLATES]
    assert not templates.loaded
    for path in ("/healthz", "/metrics"):
        async with http.get(router.admin_url + path) as resp:
            assert resp.status == 200, path
    assert not templates.loaded
    async with http.get(router.admin_url + "/login") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert CSRF_INPUT.search(await resp.text())
    assert templates.loaded
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(router.admin_url + "/api/docs", headers=bearer) as resp:
        assert resp.status == 200
        assert "text/html" in resp.headers["Content-Type"]


async def test_login_sets_an_httponly_samesite_strict_cookie_without_the_secret(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    csrf = await login_csrf(http, router.admin_url)
    async with http.post(
        router.admin_url + "/login",
        data={"csrf_token": csrf, "token": TOKEN},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        raw = resp.headers["Set-Cookie"]
        morsel = set_cookie_of(resp)[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert 0 < int(morsel["max-age"]) <= 8 * 3600
    assert TOKEN not in raw
    # The session opens the page, which carries its CSRF token for forms and fetches.
    async with http.get(
        router.admin_url + "/", headers={"Cookie": f"{COOKIE}={morsel.value}"}
    ) as resp:
        assert resp.status == 200
        html = await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Content-Security-Policy"] == CSP
    assert 'data-system="a"' in html and 'data-system="b"' in html
    assert CSRF_META.search(html)
    assert TOKEN not in html


async def test_wrong_token_or_missing_csrf_gets_no_session(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    csrf = await login_csrf(http, router.admin_url)
    async with http.post(
        router.admin_url + "/login", data={"csrf_token": csrf, "token": "nope"}
    ) as resp:
        assert resp.status == 401
        assert "Wrong admin token" in await resp.text()
        assert COOKIE not in set_cookie_of(resp)
    async with http.post(router.admin_url + "/login", data={"token": TOKEN}) as resp:
        assert resp.status == 403
        assert COOKIE not in set_cookie_of(resp)
    async with http.post(
        router.admin_url + "/login", data={"csrf_token": "login.1.x.forged", "token": TOKEN}
    ) as resp:
        assert resp.status == 403


async def test_repeated_failed_logins_are_throttled(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    csrf = await login_csrf(http, router.admin_url)
    for _ in range(PER_ADDRESS):
        async with http.post(
            router.admin_url + "/login", data={"csrf_token": csrf, "token": "guess"}
        ) as resp:
            assert resp.status == 401
    async with http.post(
        router.admin_url + "/login", data={"csrf_token": csrf, "token": TOKEN}
    ) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) > 0
        assert COOKIE not in set_cookie_of(resp)


async def test_session_writes_need_the_csrf_token(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    cookie = await log_in(http, router.admin_url)
    csrf = await page_csrf(http, router.admin_url, cookie)
    url = router.admin_url + "/api/switch"
    body = orjson.dumps({"system": "b", "via": "page"})
    for headers in ({}, {CSRF_HEADER: "wrong"}, {CSRF_HEADER: ""}):
        async with http.post(
            url, data=body, headers={"Cookie": f"{COOKIE}={cookie}", **headers}
        ) as resp:
            assert resp.status == 403, headers
            answer = await resp.json()
            assert answer["error"] == "forbidden"
            assert "CSRF" in answer["message"]
    assert router.active == "a"
    # Another session's token does not fit this one.
    other = await log_in(http, router.admin_url)
    other_csrf = await page_csrf(http, router.admin_url, other)
    async with http.post(
        url, data=body, headers={"Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: other_csrf}
    ) as resp:
        assert resp.status == 403
    async with http.post(
        url, data=body, headers={"Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf}
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["active"] == "b"
    assert router.active == "b"
    async with http.get(router.admin_url + "/api/audit?count=1", headers=ADMIN_AUTH) as resp:
        entry = (await resp.json())["entries"][0]
    assert entry["to"] == "b" and entry["source"].startswith("page")


async def test_cross_origin_writes_are_refused_whatever_they_carry(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    cookie = await log_in(http, router.admin_url)
    csrf = await page_csrf(http, router.admin_url, cookie)
    url = router.admin_url + "/api/systems/b/offline"
    for credentials in (
        {"Authorization": f"Bearer {TOKEN}"},
        {"Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf},
    ):
        for origin in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            async with http.post(url, headers={**credentials, **origin}) as resp:
                assert resp.status == 403, (credentials, origin)
                assert "cross-origin" in (await resp.json())["message"]
    # Same origin is fine.
    same = {"Origin": router.admin_url, "Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf}
    async with http.post(url, headers=same) as resp:
        assert resp.status == 200
        assert (await resp.json()) == {"system": "b", "offline": True}


async def test_api_keeps_its_bearer_contract(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    url = router.admin_url + "/api/switch"
    async with http.post(url, json={"system": "b"}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.post(url, json={"system": "b"}, headers={"Authorization": "Bearer x"}) as resp:
        assert resp.status == 401
    async with http.post(
        url, json={"system": "b"}, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200
    # Bearer callers (curl, the CLI) need no CSRF token: no browser sends that header alone.
    assert router.active == "b"


async def test_live_feed_needs_a_login_or_the_token(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    for path in ("/api/live", "/api/events"):
        async with http.get(router.admin_url + path) as resp:
            assert resp.status == 401
    async with http.get(
        router.admin_url + "/api/live", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["active"] == "a"
    assert [s["id"] for s in doc["systems"]] == ["a", "b"]
    for system in doc["systems"]:
        assert {"health", "release", "rate", "trend", "state", "open"} <= set(system)
    cookie = await log_in(http, router.admin_url)
    async with http.get(
        router.admin_url + "/api/events", headers={"Cookie": f"{COOKIE}={cookie}"}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-store"
        lines = []
        async for raw in resp.content:
            lines.append(raw.decode().strip())
            if lines[-1].startswith("data: {"):
                break
    assert "event: status" in lines
    assert orjson.loads(lines[-1][len("data: ") :])["active"] == "a"


async def test_logout_needs_csrf_and_clears_the_cookie(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    cookie = await log_in(http, router.admin_url)
    csrf = await page_csrf(http, router.admin_url, cookie)
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    async with http.post(
        router.admin_url + "/logout", data={"csrf_token": "x"}, headers=headers
    ) as resp:
        assert resp.status == 403
    async with http.post(
        router.admin_url + "/logout",
        data={"csrf_token": csrf},
        headers=headers,
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/login?out=1"
        morsel = set_cookie_of(resp)[COOKIE]
    assert morsel.value == ""
    assert morsel["max-age"] == "0"


async def test_secrets_stay_out_of_logs_and_urls(
    router: RunningRouter, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    csrf = await login_csrf(http, router.admin_url)
    async with http.post(
        router.admin_url + "/login",
        data={"csrf_token": csrf, "token": TOKEN + "-typo"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 401
    cookie = await log_in(http, router.admin_url)
    assert "failed admin credential (login form)" in caplog.text
    assert TOKEN not in caplog.text
    assert cookie not in caplog.text
    # The login form posts its body; nothing secret ever rides in a URL.
    async with http.get(router.admin_url + "/login") as resp:
        html = await resp.text()
    assert 'method="post" action="/login"' in html


async def test_only_the_admin_listener_serves_the_page(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    async with http.get(router.admin_url + "/static/admin.js") as resp:
        assert resp.status == 200
        assert "javascript" in resp.headers["Content-Type"]
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/", "/login", "/static/admin.js", "/api/openapi.json", "/api/live"):
        async with http.get(router.proxy_url + path) as resp:
            assert resp.status == 404, path


async def test_without_an_admin_token_there_is_no_login(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways, admin_token="")
    running = await routers(config)
    assert config.router.admin_token is None
    async with http.get(running.admin_url + "/login") as resp:
        assert resp.status == 403
        assert "admin_token" in await resp.text()
    async with http.get(running.admin_url + "/api/live") as resp:
        assert resp.status == 403


def test_session_cookies_are_signed_expiring_and_bound_to_the_token() -> None:
    signer = SessionSigner(Secret("one"), lifetime=60)
    cookie, session = signer.issue("alice", now=1000.0)
    assert signer.verify(cookie, now=1030.0) == session
    assert session.operator == "alice"
    assert signer.verify(cookie, now=1060.0) is None  # expired
    assert SessionSigner(Secret("two")).verify(cookie, now=1030.0) is None  # token rotated
    version, expires, nonce, operator, sig = cookie.split(".")
    later = f"{version}.{int(expires) + 3600}.{nonce}.{operator}.{sig}"
    assert signer.verify(later, now=1030.0) is None  # expiry cannot be extended
    other_name = f"{version}.{expires}.{nonce}.admin.{sig}"
    assert signer.verify(other_name, now=1030.0) is None  # nor the operator changed
    assert signer.verify(cookie[:-2], now=1030.0) is None
    assert signer.verify("garbage", now=1030.0) is None
    csrf = signer.csrf_token(session)
    assert signer.csrf_ok(session, csrf)
    other = signer.issue("alice", now=1000.0)[1]
    assert not signer.csrf_ok(other, csrf)
    login = signer.login_token(now=1000.0)
    assert signer.login_token_ok(login, now=1000.0)
    assert not signer.login_token_ok(login, now=1000.0 + 3601)
    assert not SessionSigner(Secret("two")).login_token_ok(login, now=1000.0)


async def test_named_operators_are_who_the_page_shows_and_the_audit_records(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    alice, bob = "alice-token-0123456789", "bob-token-0123456789ab"
    running = await routers(
        make_config(redis_server.url, gateways, admin_tokens={"alice": alice, "bob": bob})
    )
    url = running.admin_url
    async with http.post(
        url + "/api/switch", json={"system": "b"}, headers={"Authorization": f"Bearer {alice}"}
    ) as resp:
        assert resp.status == 200
    cookie = await log_in(http, url, bob)
    async with http.get(url + "/", headers={"Cookie": f"{COOKIE}={cookie}"}) as resp:
        html = await resp.text()
    assert re.search(r'logged in as <strong id="operator">bob</strong>', html)
    csrf = await page_csrf(http, url, cookie)
    async with http.post(
        url + "/api/switch",
        data=orjson.dumps({"system": "a", "via": "page"}),
        headers={"Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf},
    ) as resp:
        assert resp.status == 200
    # The old single admin_token keeps working as the operator "admin".
    async with http.post(url + "/api/systems/b/offline", headers=ADMIN_AUTH) as resp:
        assert resp.status == 200
    async with http.get(url + "/api/audit?count=3", headers=ADMIN_AUTH) as resp:
        sources = [e["source"] for e in (await resp.json())["entries"]]
    assert sources == [
        "api (admin@127.0.0.1)",
        "page (bob@127.0.0.1)",
        "api (alice@127.0.0.1)",
    ]
    # A session names its operator in the signed cookie: renaming it breaks the signature.
    forged = cookie.replace(".bob.", ".alice.")
    async with http.get(url + "/api/live", headers={"Cookie": f"{COOKIE}={forged}"}) as resp:
        assert resp.status == 401
