"""The token hop end to end: real router, real simulated systems, real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from tests.helpers import (
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RunningRouter,
)


@pytest.fixture
def router_options() -> dict[str, Any]:
    """The `router` fixture with a short read timeout and a small body limit."""
    return {"read_timeout": 1.0, "max_body_size": 4096}


async def post_session(
    http: aiohttp.ClientSession, router: RunningRouter, body: Any = SESSION_BODY, **kw: Any
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(
        router.proxy_url + SESSION_PATH,
        data=data,
        headers={"Content-Type": "application/json", **kw.pop("headers", {})},
        **kw,
    ) as resp:
        payload = await resp.read()
        return resp.status, orjson.loads(payload) if payload else {}, resp.headers


async def test_token_goes_to_active_system_with_rewritten_scheme(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway]
) -> None:
    status, doc, headers = await post_session(http, router)
    assert status == 200
    assert doc["sessionid"].startswith("a-")
    # What the gateway received: the router rewrote it to a's public URL, keeping the port's
    # type (a string here). The answer is the gateway's own, the sessionid alone.
    sent = gateways["a"].state.received[doc["sessionid"]]
    assert sent == {"secure": True, "host": "a.example.com", "port": "8443"}
    assert list(doc) == ["sessionid"]
    assert headers["X-Token-Router-System"] == "a"
    assert headers["X-Sim-System"] == "a"
    assert doc["sessionid"] in gateways["a"].state.sessions


async def test_numeric_port_stays_numeric_and_missing_details_are_added(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway]
) -> None:
    received = gateways["a"].state.received
    body = {**SESSION_BODY, "urlSchemeDetails": {"secure": False, "host": "x", "port": 1}}
    status, doc, _ = await post_session(http, router, body)
    assert status == 200
    assert received[doc["sessionid"]]["port"] == 8443
    body = {k: v for k, v in SESSION_BODY.items() if k != "urlSchemeDetails"}
    status, doc, _ = await post_session(http, router, body)
    assert received[doc["sessionid"]] == {"secure": True, "host": "a.example.com", "port": "8443"}


async def test_forwarded_headers_set_and_hop_by_hop_stripped(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway]
) -> None:
    seen: list[dict[str, str]] = []

    async def capture(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(dict(request.headers))
        return aiohttp.web.json_response({"sessionid": "cap-1"})

    # Swap the simulator's session handler for one that records the headers it got.
    app = gateways["a"].runner.app
    assert app is not None
    route = next(r for r in app.router.routes() if r.method == "POST" and "session" in str(r))
    original = route._handler  # noqa: SLF001
    route._handler = capture  # noqa: SLF001
    try:
        status, _, _ = await post_session(
            http,
            router,
            headers={
                "X-Forwarded-For": "203.0.113.9",
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "must-not-pass",
                "Proxy-Authorization": "Basic abc",
                "X-Request-Id": "req-123",
            },
        )
    finally:
        route._handler = original  # noqa: SLF001
    assert status == 200
    got = {k.lower(): v for k, v in seen[0].items()}
    assert got["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"].startswith("127.0.0.1:")
    assert got["x-request-id"] == "req-123"
    assert "x-secret-hop" not in got
    assert "proxy-authorization" not in got


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "malformed_json"),
        (b"", "malformed_json"),
        (orjson.dumps({"urlSchemeDetails": "https://x"}), "malformed_json"),
    ],
)
async def test_malformed_json_is_400_and_reaches_no_upstream(
    router: RunningRouter,
    http: aiohttp.ClientSession,
    gateways: dict[str, Gateway],
    body: bytes,
    code: str,
) -> None:
    status, doc, _ = await post_session(http, router, body)
    assert status == 400
    assert doc["error"] == code
    assert gateways["a"].state.requests["session_create"] == 0


async def test_body_over_limit_is_413(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway]
) -> None:
    big = {**SESSION_BODY, "padding": "x" * 5000}
    status, doc, _ = await post_session(http, router, big)
    assert status == 413
    assert doc["error"] == "body_too_large"

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    # Chunked, no Content-Length: the limit holds while reading too.
    async with http.post(router.proxy_url + SESSION_PATH, data=chunks()) as resp:
        assert resp.status == 413
    assert gateways["a"].state.requests["session_create"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/admin",
        "/api/status",
        "/gateway/sessions",
        "/gateway/sessions/session/id/",
        "/gateway/../gateway/adapter.js",
        "/gateway//adapter.js",
        "/assistserver/sdk/web/../../etc/passwd",
        "/assistserver/sdk/web/%2e%2e/%2e%2e/etc/passwd",
        "/v/abc/../gateway/adapter.js",
        "/metrics",
        "/_sim/state",
        "/stats",
    ],
)
async def test_unknown_paths_are_404_json_and_reach_no_upstream(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway], path: str
) -> None:
    # encoded=True: sent as written, not normalised by the client first.
    async with http.get(URL(router.proxy_url + path, encoded=True)) as resp:
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == "not_found"
    assert sum(gateways["a"].state.requests.values()) == 0


async def test_wrong_method_is_405_with_allow(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    async with http.get(router.proxy_url + SESSION_PATH) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert (await resp.json())["error"] == "method_not_allowed"


async def test_upstream_500_is_passed_through_with_system(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway]
) -> None:
    gateways["a"].state.set_failure(500, 1)
    status, doc, headers = await post_session(http, router)
    assert status == 500
    assert doc["error"] == "simulated_failure"
    assert headers["X-Token-Router-System"] == "a"
    status, _, _ = await post_session(http, router)
    assert status == 200


async def test_slow_upstream_is_504_naming_the_system(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway]
) -> None:
    gateways["a"].state.delay = 3.0  # read_timeout is 1 s in this fixture
    status, doc, headers = await post_session(http, router)
    assert status == 504
    assert doc == {
        "error": "upstream_timeout",
        "message": "system 'a' did not answer within 1 s",
        "system": "a",
    }
    assert headers["X-Token-Router-System"] == "a"


async def test_upstream_down_is_502_naming_the_system(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway]
) -> None:
    await gateways["a"].stop()
    status, doc, _ = await post_session(http, router)
    assert status == 502
    assert doc["error"] == "upstream_unavailable"
    assert doc["system"] == "a"
    assert "cannot connect to system 'a'" in doc["message"]


async def test_library_paths_go_to_active_with_short_cache(
    router: RunningRouter, http: aiohttp.ClientSession, gateways: dict[str, Gateway]
) -> None:
    async with http.get(router.proxy_url + "/gateway/adapter.js") as resp:
        assert resp.status == 200
        body = await resp.read()
        assert resp.headers["Cache-Control"] == "public, max-age=60"
        assert resp.headers["X-Token-Router-System"] == "a"
    assert body == gateways["a"].state.files["/gateway/adapter.js"][0]
    async with http.head(router.proxy_url + "/assistserver/sdk/web/consumer/assist.js") as resp:
        assert resp.status == 200


async def test_many_concurrent_tokens_all_succeed(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    results = await asyncio.gather(*(post_session(http, router) for _ in range(200)))
    assert [status for status, _, _ in results] == [200] * 200
    assert len({doc["sessionid"] for _, doc, _ in results}) == 200
