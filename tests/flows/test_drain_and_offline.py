"""Draining and offline systems: open items counted through a switch, 503 for offline."""

from __future__ import annotations

import aiohttp

from tests.helpers import (
    ADMIN_AUTH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    issued_everywhere,
    make_config,
    new_code,
    new_token,
    states_of,
    switch_to,
    wait_until,
)


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
        return bool((await states_of(http, r2))[system] == (state, count))

    await wait_until(lambda: counted("a", "active", 3))  # all instances add up
    await switch_to(redis_server, (r1, r2), "b")
    assert (await states_of(http, r1)) == {"a": ("draining", 3), "b": ("active", 0)}
    async with http.delete(r2.proxy_url + f"/gateway/sessions/session/id/{sid1}") as resp:
        assert resp.status == 204
    await wait_until(lambda: counted("a", "draining", 2))

    async def drained() -> bool:
        return bool((await states_of(http, r1))["a"] == ("drained", 0))

    await wait_until(drained, timeout=10, interval=0.2)  # the rest expire (TTL 2 s)


async def test_offline_system_answers_503_at_once(
    pair: tuple[RunningRouter, RunningRouter],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    r1, r2 = pair
    sid, _ = await new_token(http, r1)
    await issued_everywhere(r1)
    await switch_to(redis_server, pair, "b")
    # a still holds the token: refused, the count named, as the CLI and the page refuse it
    async with http.post(r1.admin_url + "/api/systems/a/offline", headers=ADMIN_AUTH) as resp:
        assert resp.status == 409
        doc = await resp.json()
        assert (doc["gate"], doc["override"], doc["system"]) == ("open", '"force": true', "a")
        assert "a still holds 1 open session(s)" in doc["message"], doc
    assert redis_server.command("SCARD", "tokenrouter:offline") == ":0"
    async with http.post(
        r1.admin_url + "/api/systems/a/offline",
        json={"force": True, "reason": "gateway broken"},
        headers=ADMIN_AUTH,
    ) as resp:
        assert resp.status == 200
    await wait_until(lambda: all(r.server.runtime.holder.current.is_offline("a") for r in pair))
    async with http.get(r1.admin_url + "/api/audit", headers=ADMIN_AUTH) as resp:
        last = (await resp.json())["entries"][0]
    assert (last["action"], last["to"], last["forced"]) == ("offline", "a", True)
    assert "forced past open: a still holds 1" in last["reason"], last
    async with http.delete(r2.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 503
        doc = await resp.json()
        assert doc["error"] == "system_offline"
        assert doc["system"] == "a"
    assert (await states_of(http, r2))["a"][0] == "offline"
    async with http.post(
        r2.admin_url + "/api/switch", json={"system": "a"}, headers=ADMIN_AUTH
    ) as r:
        assert r.status == 409
    async with http.post(r2.admin_url + "/api/systems/a/online", headers=ADMIN_AUTH) as resp:
        assert resp.status == 200
    await wait_until(lambda: not any(r.server.runtime.holder.current.offline for r in pair))
    async with http.delete(r1.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 204
