"""The admin listener's JSON API: probes, status, switch, offline/online, audit."""

from __future__ import annotations

import base64
import time
from typing import Any

import aiohttp
import pytest

from tests.helpers import Gateway, RedisServer, RouterFactory, RunningRouter, make_config

AUTH = {"Authorization": "Bearer test-admin-token"}


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, Any], Any]:
    async with http.request(method, url, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_health_and_readiness(router: RunningRouter, http: aiohttp.ClientSession) -> None:
    assert (await call(http, "GET", router.admin_url + "/healthz"))[:2] == (200, {"status": "ok"})
    status, doc, headers = await call(http, "GET", router.admin_url + "/readyz")
    assert (status, doc) == (200, {"status": "ready"})
    assert headers["Cache-Control"] == "no-store"


async def test_status_document(router: RunningRouter, http: aiohttp.ClientSession) -> None:
    status, doc, _ = await call(http, "GET", router.admin_url + "/api/status", headers=AUTH)
    assert status == 200
    assert doc["active"] == "a"
    assert [(s["id"], s["state"], s["open"]) for s in doc["systems"]] == [
        ("a", "active", 0),
        ("b", "drained", 0),
    ]
    assert doc["store"]["degraded"] is False
    assert doc["store"]["synced"] is True
    assert doc["refused"] is None
    assert "test-admin-token" not in str(doc)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic Og=="}, 401),
        ({"Authorization": "test-admin-token"}, 401),
    ],
)
async def test_switch_requires_the_admin_token(
    router: RunningRouter, http: aiohttp.ClientSession, headers: dict[str, str], code: int
) -> None:
    status, doc, resp_headers = await call(
        http, "POST", router.admin_url + "/api/switch", json={"system": "b"}, headers=headers
    )
    assert status == code
    assert doc["error"] == "unauthorized"
    assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    assert router.active == "a"


async def test_switch_with_bearer_and_basic(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    status, doc, _ = await call(
        http, "POST", router.admin_url + "/api/switch", json={"system": "b"}, headers=AUTH
    )
    assert status == 200
    assert (doc["active"], doc["previous"], doc["changed"], doc["forced"]) == ("b", "a", True, None)
    assert doc["confirmation"]["applied"] == doc["confirmation"]["total"] == 1
    assert doc["message"].startswith("switched a -> b; applied by 1/1 instances in ")
    assert router.active == "b"
    basic = {"Authorization": "Basic " + base64.b64encode(b"admin:test-admin-token").decode()}
    status, doc, _ = await call(
        http, "POST", router.admin_url + "/api/switch", json={"system": "a"}, headers=basic
    )
    assert (status, doc["active"], doc["previous"]) == (200, "a", "b")
    status, doc, _ = await call(http, "GET", router.admin_url + "/api/audit?count=2", headers=AUTH)
    # The audit names the operator ("admin" is admin_token's) and the address.
    assert [(e["from"], e["to"], e["source"]) for e in doc["entries"]] == [
        ("b", "a", "api (admin@127.0.0.1)"),
        ("a", "b", "api (admin@127.0.0.1)"),
    ]

    # A page at a time: `next` is the `before` of the following page, null on the last one.
    url = router.admin_url + "/api/audit"
    status, page, _ = await call(http, "GET", url + "?count=1", headers=AUTH)
    assert status == 200 and [e["to"] for e in page["entries"]] == ["a"] and page["next"]
    status, page, _ = await call(http, "GET", f"{url}?count=1&before={page['next']}", headers=AUTH)
    assert [e["to"] for e in page["entries"]] == ["b"] and page["next"]
    status, page, _ = await call(http, "GET", f"{url}?count=5&before={page['next']}", headers=AUTH)
    assert [e["to"] for e in page["entries"]] == ["a"] and page["next"] is None  # the seed
    status, page, _ = await call(http, "GET", f"{url}?since={time.time() + 60}", headers=AUTH)
    assert (status, page) == (200, {"entries": [], "next": None})
    status, page, _ = await call(http, "GET", url + "?before=not-an-id", headers=AUTH)
    assert status == 400 and page["message"].startswith("query parameter before: ")


@pytest.mark.parametrize(
    ("body", "status_code", "code"),
    [
        ({"system": "c"}, 400, "bad_request"),
        ({}, 400, "bad_request"),
        ("not an object", 400, "malformed_json"),
    ],
)
async def test_switch_bad_requests(
    router: RunningRouter, http: aiohttp.ClientSession, body: Any, status_code: int, code: str
) -> None:
    status, doc, _ = await call(
        http, "POST", router.admin_url + "/api/switch", json=body, headers=AUTH
    )
    assert (status, doc["error"]) == (status_code, code)


async def test_switch_to_offline_system_is_refused(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    url = router.admin_url
    assert (await call(http, "POST", url + "/api/systems/b/offline", headers=AUTH))[0] == 200
    status, doc, _ = await call(
        http, "POST", url + "/api/switch", json={"system": "b"}, headers=AUTH
    )
    assert status == 409
    assert (doc["error"], doc["gate"], doc["override"]) == ("refused", "offline", '"force": true')
    assert "offline" in doc["message"]
    assert (await call(http, "POST", url + "/api/systems/b/online", headers=AUTH))[0] == 200
    status, _, _ = await call(http, "POST", url + "/api/switch", json={"system": "b"}, headers=AUTH)
    assert status == 200


async def test_writes_refused_when_no_token_is_configured(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, admin_token=""))
    status, doc, _ = await call(
        http, "POST", router.admin_url + "/api/switch", json={"system": "b"}, headers=AUTH
    )
    assert status == 403
    assert "router.admin_token" in doc["message"]


async def test_switch_while_redis_is_down_is_503(
    router: RunningRouter, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    redis_server.stop()
    status, doc, _ = await call(
        http, "POST", router.admin_url + "/api/switch", json={"system": "b"}, headers=AUTH
    )
    assert status == 503
    assert "cannot switch" in doc["message"]
    assert router.active == "a"


async def test_unknown_admin_route_is_json_404(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    status, doc, _ = await call(http, "GET", router.admin_url + "/gateway/sessions/session")
    assert (status, doc["error"]) == (404, "not_found")
