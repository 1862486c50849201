"""Nothing of the old system is cut: affinity across switches and instances, Live Assist,
CORS, drain counting, offline, preview, prefer and the exactly-once audit."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from tests.helpers import (
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    wait_until,
)

AUTH = {"Authorization": "Bearer test-admin-token"}


@pytest.fixture
async def pair(
    redis_server: RedisServer, gateways: dict[str, Gateway], routers: RouterFactory
) -> tuple[RunningRouter, RunningRouter]:
    config = make_config(
        redis_server.url,
        gateways,
        preview_secret="s3cret",
        cors_origins=["https://shop.example.com"],
    )
    return await routers(config), await routers(config)


async def switch(redis_server: RedisServer, routers: tuple[RunningRouter, ...], to: str) -> None:
    redis_server.command("SET", "tokenrouter:active", to)
    await wait_until(lambda: all(r.active == to for r in routers))


async def new_token(
    http: aiohttp.ClientSession, router: RunningRouter, headers: dict[str, str] | None = None
) -> tuple[str, str]:
    async with http.post(
        router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY), headers=headers or {}
    ) as resp:
        assert resp.status == 200
        return (await resp.json())["sessionid"], resp.headers["X-Token-Router-System"]


async def new_code(http: aiohttp.ClientSession, router: RunningRouter) -> str:
    async with http.put(router.proxy_url + "/assistserver/shortcode/create") as resp:
        assert resp.status == 200
        return str((await resp.json())["shortCode"])


async def status_of(http: aiohttp.ClientSession, router: RunningRouter) -> dict[str, Any]:
    async with http.get(router.admin_url + "/api/status") as resp:
        doc: dict[str, Any] = await resp.json()
    return {s["id"]: (s["state"], s["open"]) for s in doc["systems"]}


async def test_token_delete_reaches_issuer_after_switch_from_another_instance(
    pair: tuple[RunningRouter, RunningRouter],
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
) -> None:
    r1, r2 = pair
    sid, system = await new_token(http, r1)
    assert system == "a"
    await switch(redis_server, pair, "b")
    async with http.delete(r2.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 200
        assert resp.headers["X-Token-Router-System"] == "a"
    assert sid not in gateways["a"].state.sessions
    # An id nobody issued goes to the active system (which does not know it either).
    async with http.delete(r2.proxy_url + "/gateway/sessions/session/id/nobody") as resp:
        assert resp.status == 404
        assert resp.headers["X-Token-Router-System"] == "b"


async def test_short_codes_resolve_on_their_system_after_switch(
    pair: tuple[RunningRouter, RunningRouter],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    r1, r2 = pair
    code = await new_code(http, r1)
    await switch(redis_server, pair, "b")
    for kind in ("consumer", "agent"):
        async with http.get(
            r2.proxy_url + f"/assistserver/shortcode/{kind}", params={"appkey": code}
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Token-Router-System"] == "a"
            assert "cid" in await resp.json()
    # New codes now come from b; an unknown code goes to b, which answers 403.
    code_b = await new_code(http, r2)
    async with http.get(
        r1.proxy_url + "/assistserver/shortcode/consumer", params={"appkey": code_b}
    ) as resp:
        assert resp.headers["X-Token-Router-System"] == "b"
        assert resp.status == 200
    async with http.get(
        r1.proxy_url + "/assistserver/shortcode/consumer", params={"appkey": "0000000"}
    ) as resp:
        assert resp.status == 403
        assert resp.headers["X-Token-Router-System"] == "b"


async def test_live_assist_forms_and_query_strings_pass_intact(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, _ = pair
    form = {"username": "agent 7", "password": "p&ss=word", "type": "create"}
    async with http.post(r1.proxy_url + "/assistserver/agent?x=1&y=%20z", data=form) as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["form"] == form
    assert doc["system"] == "a"


async def test_cors_preflight_and_pass_through(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, _ = pair
    origin = "https://shop.example.com"
    async with http.options(
        r1.proxy_url + "/assistserver/shortcode/create",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    ) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "content-type"
        assert "Set-Cookie" not in resp.headers
    async with http.options(
        r1.proxy_url + "/assistserver/shortcode/create",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "PUT"},
    ) as resp:
        assert resp.status == 403
    async with http.put(
        r1.proxy_url + "/assistserver/shortcode/create", headers={"Origin": origin}
    ) as resp:
        assert resp.status == 200
        # The gateway's own CORS answer passes through.
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"


async def test_drain_counts_through_switch_delete_and_expiry(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways, affinity_ttl=2)
    r1, r2 = await routers(config), await routers(config)
    sid1, _ = await new_token(http, r1)
    await new_token(http, r2)
    await new_code(http, r1)

    async def counted(system: str, state: str, count: int) -> bool:
        # Records are written right behind the answers: wait for them, bounded.
        return bool((await status_of(http, r2))[system] == (state, count))

    await wait_until(lambda: counted("a", "active", 3))  # all instances add up
    await switch(redis_server, (r1, r2), "b")
    assert (await status_of(http, r1)) == {"a": ("draining", 3), "b": ("active", 0)}
    async with http.delete(r2.proxy_url + f"/gateway/sessions/session/id/{sid1}") as resp:
        assert resp.status == 200
    await wait_until(lambda: counted("a", "draining", 2))

    async def drained() -> bool:
        return bool((await status_of(http, r1))["a"] == ("drained", 0))

    await wait_until(drained, timeout=10, interval=0.2)  # the rest expire (TTL 2 s)


async def test_offline_system_answers_503_at_once(
    pair: tuple[RunningRouter, RunningRouter],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    r1, r2 = pair
    sid, _ = await new_token(http, r1)
    await switch(redis_server, pair, "b")
    async with http.post(r1.admin_url + "/api/systems/a/offline", headers=AUTH) as resp:
        assert resp.status == 200
    await wait_until(lambda: all(r.server.runtime.holder.current.is_offline("a") for r in pair))
    async with http.delete(r2.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 503
        doc = await resp.json()
        assert doc["error"] == "system_offline"
        assert doc["system"] == "a"
    assert (await status_of(http, r2))["a"][0] == "offline"
    async with http.post(r2.admin_url + "/api/switch", json={"system": "a"}, headers=AUTH) as r:
        assert r.status == 409
    async with http.post(r2.admin_url + "/api/systems/a/online", headers=AUTH) as resp:
        assert resp.status == 200
    await wait_until(lambda: not any(r.server.runtime.holder.current.offline for r in pair))
    async with http.delete(r1.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 200


async def test_preview_with_right_and_wrong_secret(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, r2 = pair
    _, system = await new_token(http, r1, {"X-Token-Router-Preview": "b:s3cret"})
    assert system == "b"
    _, system = await new_token(http, r1, {"X-Token-Router-Preview": "b:wrong"})
    assert system == "a"
    _, system = await new_token(http, r1, {"X-Token-Router-Preview": "b"})
    assert system == "a"

    async def previewing() -> bool:
        return bool((await status_of(http, r2))["b"][0] == "preview")

    await wait_until(previewing)


async def test_prefer_header_and_policy(
    pair: tuple[RunningRouter, RunningRouter],
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    r1, _ = pair
    _, system = await new_token(http, r1, {"X-Token-Router-Prefer": "b"})
    assert system == "b"
    _, system = await new_token(http, r1, {"X-Token-Router-Prefer": "zz"})
    assert system == "a"
    never = await routers(make_config(redis_server.url, gateways, prefer_policy="never"))
    _, system = await new_token(http, never, {"X-Token-Router-Prefer": "b"})
    assert system == "a"
    async with http.post(r1.admin_url + "/api/systems/b/offline", headers=AUTH) as resp:
        assert resp.status == 200
    await wait_until(lambda: r1.server.runtime.holder.current.is_offline("b"))
    _, system = await new_token(http, r1, {"X-Token-Router-Prefer": "b"})
    assert system == "a"


async def test_every_change_is_audited_exactly_once(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways)
    instances = tuple([await routers(config) for _ in range(3)])
    await switch(redis_server, instances, "b")  # a bare SET, seen by all three
    await asyncio.sleep(0.6)  # a resync tick on every instance: none may record it again
    async with http.post(
        instances[1].admin_url + "/api/switch", json={"system": "a"}, headers=AUTH
    ) as resp:
        assert resp.status == 200
    await wait_until(lambda: all(r.active == "a" for r in instances))
    await switch(redis_server, instances, "b")
    await asyncio.sleep(0.6)
    async with http.get(instances[2].admin_url + "/api/audit") as resp:
        entries = (await resp.json())["entries"]
    changes = [(e["from"], e["to"], e["source"].split(" ")[0]) for e in reversed(entries)]
    assert changes == [
        ("", "a", "seed"),
        ("a", "b", "external"),
        ("b", "a", "api"),
        ("a", "b", "external"),
    ]
