"""Guarded switching through the admin API, with two and three router instances sharing one
real Redis and real simulated systems: every gate, compare-and-set under concurrent writers,
undo, offline of the active system, propagation confirmation, the instance registry, and a
bare SET to an offline system."""

from __future__ import annotations

import asyncio
import re
import time
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
# gate_probe_age: a gateway stopped by a test is probed again, not trusted for 5 s.
FAST = {"heartbeat_interval": 0.2, "rollout_tick": 0.05, "leader_ttl": 0.5, "gate_probe_age": 0.001}

pytestmark = pytest.mark.timeout(120)


async def api(
    http: aiohttp.ClientSession,
    router: RunningRouter,
    path: str,
    body: dict[str, Any] | None = None,
    method: str = "POST",
) -> tuple[int, Any]:
    async with http.request(
        method, router.admin_url + path, json=body if method == "POST" else None, headers=AUTH
    ) as resp:
        return resp.status, await resp.json()


async def audit(http: aiohttp.ClientSession, router: RunningRouter) -> list[dict[str, Any]]:
    status, doc = await api(http, router, "/api/audit?count=100", method="GET")
    assert status == 200
    return doc["entries"]  # type: ignore[no-any-return]


async def fleet(
    n: int, redis_server: RedisServer, gateways: dict[str, Gateway], routers: RouterFactory
) -> list[RunningRouter]:
    config = make_config(redis_server.url, gateways, **FAST)
    instances = [await routers(config) for _ in range(n)]
    # Every instance has registered before a test counts on the fleet.
    await wait_until(lambda: instance_count(redis_server) == n, timeout=10)
    return instances


def instance_count(redis_server: RedisServer) -> int:
    return int(redis_server.command("HLEN", "tokenrouter:instances").lstrip(":"))


async def token_system(http: aiohttp.ClientSession, router: RunningRouter) -> str:
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200, await r.text()
        return r.headers["X-Token-Router-System"]


async def test_switch_is_confirmed_by_three_instances(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await fleet(3, redis_server, gateways, routers)
    status, doc = await api(http, instances[0], "/api/switch", {"system": "b", "reason": "go"})
    assert status == 200, doc
    confirmation = doc["confirmation"]
    assert (confirmation["applied"], confirmation["total"]) == (3, 3)
    assert confirmation["laggards"] == [] and confirmation["timed_out"] is False
    assert re.fullmatch(r"switched a -> b; applied by 3/3 instances in \d+ ms", doc["message"])
    # Answered only once applied: every instance routes to b at this moment.
    assert all(r.active == "b" for r in instances)
    for router in instances:
        assert await token_system(http, router) == "b"
    [entry] = [e for e in await audit(http, instances[0]) if e["action"] == "switch" and e["from"]]
    assert (entry["from"], entry["to"], entry["reason"], entry["forced"]) == ("a", "b", "go", False)

    status, doc = await api(http, instances[1], "/api/instances", method="GET")
    assert status == 200
    assert len(doc["instances"]) == 3 and doc["behind"] == []
    for inst in doc["instances"]:
        assert inst["applied"]["active"] == "b" and inst["current"] is True
        assert {"id", "host", "pid", "version", "started", "seen"} <= inst.keys()
    assert sum(1 for inst in doc["instances"] if inst["leader"]) <= 1


async def test_laggard_is_named_after_the_bound(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways, confirm_timeout=0.3, **FAST)
    router = await routers(config)
    await wait_until(lambda: instance_count(redis_server) == 1)
    # An instance that beats but never applies anything (a stuck process, as Redis sees it).
    stuck = {"id": "stuck:1", "seen": time.time() + 30, "applied": {"generation": 0}}
    redis_server.command("HSET", "tokenrouter:instances", "stuck:1", orjson.dumps(stuck).decode())
    status, doc = await api(http, router, "/api/switch", {"system": "b"})
    assert status == 200
    c = doc["confirmation"]
    assert (c["applied"], c["total"], c["laggards"], c["timed_out"]) == (1, 2, ["stuck:1"], True)
    assert (c["complete"], c["silent"]) == (False, [])
    assert c["elapsed_ms"] >= 300
    assert "applied by 1/2 instances" in doc["message"]
    assert "NOT applied by stuck:1" in doc["message"]


async def test_a_laggard_that_falls_silent_is_not_pruned_from_the_answer(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """A frozen instance stops heartbeating and is dropped from the registry 3 beats later;
    it may still route on the old state, so the switch's answer keeps naming it."""
    config = make_config(redis_server.url, gateways, confirm_timeout=30, **FAST)
    router = await routers(config)
    await wait_until(lambda: instance_count(redis_server) == 1)
    # Live for about 3 s more (stale after 3 beats of 0.2 s past `seen`), then silent.
    stuck = {"id": "stuck:1", "seen": time.time() + 3, "applied": {"generation": 0}}
    redis_server.command("HSET", "tokenrouter:instances", "stuck:1", orjson.dumps(stuck).decode())
    status, doc = await api(http, router, "/api/switch", {"system": "b"})
    assert status == 200
    c = doc["confirmation"]
    assert instance_count(redis_server) == 1  # the registry dropped it meanwhile
    assert (c["applied"], c["total"], c["laggards"], c["silent"]) == (
        1,
        2,
        ["stuck:1"],
        ["stuck:1"],
    )
    assert c["complete"] is False
    # Nothing left to wait for once only silent laggards remain: not the whole bound.
    assert c["elapsed_ms"] < 30_000
    assert "NOT applied by stuck:1 (stuck:1 stopped heartbeating meanwhile)" in doc["message"]


async def test_stale_instances_are_dropped(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    [router] = await fleet(1, redis_server, gateways, routers)
    gone = {"id": "gone:1", "seen": time.time() - 10, "applied": {"generation": 0}}
    redis_server.command("HSET", "tokenrouter:instances", "gone:1", orjson.dumps(gone).decode())
    status, doc = await api(http, router, "/api/instances", method="GET")
    assert [i["id"] for i in doc["instances"]] == [router.server.runtime.instance]
    assert instance_count(redis_server) == 1  # removed from Redis, not only hidden
    # A clean stop deregisters at once.
    second = await routers(router.server.config)
    await wait_until(lambda: instance_count(redis_server) == 2)
    routers.routers.remove(second)
    await second.server.stop()
    assert instance_count(redis_server) == 1


async def test_health_gate_refuses_then_force_is_recorded(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    [router, other] = await fleet(2, redis_server, gateways, routers)
    await gateways["b"].stop()  # b's gateway goes away
    status, doc = await api(http, router, "/api/switch", {"system": "b"})
    assert status == 409
    assert (doc["error"], doc["gate"], doc["system"]) == ("refused", "health", "b")
    assert doc["override"] == '"force": true'
    assert "b's gateway did not answer a health probe" in doc["message"]
    assert router.active == "a" and other.active == "a"
    assert redis_server.command("GET", "tokenrouter:active") == "$1\r\na"

    status, doc = await api(
        http, router, "/api/switch", {"system": "b", "force": True, "reason": "gw restarting"}
    )
    assert status == 200, doc
    assert doc["forced"].startswith("health: b's gateway did not answer")
    entry = next(e for e in await audit(http, router) if e["action"] == "switch")
    assert entry["forced"] is True
    assert entry["reason"].startswith("gw restarting (forced past health:")


async def test_offline_gate_and_offline_of_the_active_system(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    [router, other] = await fleet(2, redis_server, gateways, routers)
    status, doc = await api(http, router, "/api/systems/a/offline", {})
    assert (status, doc["gate"]) == (409, "active")
    assert "a is the active system" in doc["message"]
    assert redis_server.command("SCARD", "tokenrouter:offline") == ":0"

    assert (await api(http, router, "/api/systems/b/offline", {}))[0] == 200
    status, doc = await api(http, router, "/api/switch", {"system": "b"})
    assert (status, doc["gate"]) == (409, "offline")
    # Forced: b comes online and becomes active, both audited as forced.
    status, doc = await api(http, router, "/api/switch", {"system": "b", "force": True})
    assert status == 200 and doc["active"] == "b"
    await wait_until(
        lambda: other.active == "b" and not other.server.runtime.holder.current.offline
    )
    entries = await audit(http, router)
    assert [(e["action"], e["forced"]) for e in entries[:2]] == [("switch", True), ("online", True)]

    # The active system offline, with force: allowed and recorded; routers obey it (503).
    status, doc = await api(http, router, "/api/systems/b/offline", {"force": True})
    assert status == 200
    await wait_until(lambda: other.server.runtime.holder.current.is_offline("b"))
    assert other.server.runtime.holder.current.refused is None
    async with http.post(other.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 503
    entry = (await audit(http, router))[0]
    assert (entry["action"], entry["forced"]) == ("offline", True)


async def test_bare_set_to_an_offline_system_is_refused(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await fleet(2, redis_server, gateways, routers)
    assert (await api(http, instances[0], "/api/systems/b/offline", {}))[0] == 200
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(
        lambda: all(r.server.runtime.holder.current.refused is not None for r in instances)
    )
    for router in instances:
        assert router.active == "a"
        assert await token_system(http, router) == "a"
        async with http.get(router.admin_url + "/readyz") as resp:
            ready = await resp.json()
        assert (ready["refused"], ready["refused_reason"]) == ("b", "offline")
        async with http.get(router.admin_url + "/metrics") as resp:
            assert "tokenrouter_refused_active 1.0" in await resp.text()
    assert not any(
        e["action"] == "switch" and e["to"] == "b" for e in await audit(http, instances[0])
    )
    # Brought online, the value is no longer refused: it was set, now it is valid.
    assert (await api(http, instances[0], "/api/systems/b/online", {}))[0] == 200
    await wait_until(lambda: all(r.active == "b" for r in instances))


async def test_compare_and_set_under_two_concurrent_writers(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await fleet(2, redis_server, gateways, routers)
    status, doc = await api(http, instances[0], "/api/switch", {"system": "b", "expect": "b"})
    assert (status, doc["gate"], doc["override"]) == (409, "expect", None)
    assert "the active system is a, not b" in doc["message"]
    # force never overrides expect
    status, doc = await api(
        http, instances[0], "/api/switch", {"system": "b", "expect": "b", "force": True}
    )
    assert (status, doc["gate"]) == (409, "expect")

    for rounds in range(5):
        current = instances[0].active
        target = "b" if current == "a" else "a"
        # Two operators, two instances, same view of the world, at the same moment.
        results = await asyncio.gather(
            api(http, instances[0], "/api/switch", {"system": target, "expect": current}),
            api(http, instances[1], "/api/switch", {"system": target, "expect": current}),
        )
        statuses = sorted(s for s, _ in results)
        # Both ask for the same change: the loser sees either the CAS refusal or, when it
        # ran after, a refusal too (active is no longer `current`). Exactly one changed it.
        assert statuses == [200, 409], (rounds, results)
        loser = next(d for s, d in results if s == 409)
        assert loser["gate"] == "expect"
        await wait_until(lambda t=target: all(r.active == t for r in instances))  # type: ignore[misc]
    switches = [e for e in await audit(http, instances[0]) if e["action"] == "switch" and e["from"]]
    assert len(switches) == 5  # every winner recorded once, no loser recorded


async def test_undo_goes_back_through_the_gates(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await fleet(2, redis_server, gateways, routers)
    status, doc = await api(http, instances[0], "/api/undo", {})
    assert status == 409 and "nothing to undo" in doc["message"]
    assert (await api(http, instances[0], "/api/switch", {"system": "b"}))[0] == 200
    status, doc = await api(http, instances[1], "/api/undo", {"reason": "b misbehaves"})
    assert status == 200, doc
    assert (doc["previous"], doc["active"]) == ("b", "a")
    assert doc["message"].startswith("undone: b -> a; applied by 2/2 instances in ")
    assert all(r.active == "a" for r in instances)
    entry = (await audit(http, instances[0]))[0]
    assert (entry["action"], entry["from"], entry["to"], entry["reason"]) == (
        "undo",
        "b",
        "a",
        "b misbehaves",
    )
    # Undo of the undo is b again; through the gates: b's gateway away -> refused.
    await gateways["b"].stop()
    status, doc = await api(http, instances[0], "/api/undo", {})
    assert (status, doc.get("gate")) == (409, "health"), doc
    assert all(r.active == "a" for r in instances)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"system": "b", "force": "yes"}, "body field force"),
        ({"system": "b", "expect": 3}, "body field expect"),
        ({"system": "b", "expect": "zz"}, "unknown system 'zz'"),
        ({"system": "b", "reason": "x" * 201}, "body field reason"),
        ({"system": "b", "forse": True}, "body field forse"),
    ],
)
async def test_switch_bad_input_changes_nothing(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    message: str,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, **FAST))
    await wait_until(lambda: router.server.runtime.holder.synced)
    before = redis_server.command("XLEN", "tokenrouter:audit")
    status, doc = await api(http, router, "/api/switch", body)
    assert (status, doc["error"]) == (400, "bad_request")
    assert message in doc["message"]
    assert redis_server.command("XLEN", "tokenrouter:audit") == before
    assert router.active == "a"
