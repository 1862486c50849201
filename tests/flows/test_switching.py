"""Following the active system in Redis: bare SETs, refused values, Redis outages."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from router.state.memory_store import MemoryStore
from tests.helpers import (
    ADMIN_AUTH,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    wait_until,
)


async def token_system(http: aiohttp.ClientSession, router: RunningRouter) -> str:
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200, await r.text()
        return r.headers["X-Token-Router-System"]


async def admin_json(http: aiohttp.ClientSession, router: RunningRouter, path: str) -> dict:  # type: ignore[type-arg]
    async with http.get(router.admin_url + path, headers=ADMIN_AUTH) as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def test_bare_set_reaches_three_instances(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways)
    instances = [await routers(config) for _ in range(3)]
    for router in instances:
        assert await token_system(http, router) == "a"

    redis_server.command("SET", "tokenrouter:active", "b")
    # Keyspace notifications make this near-instant; the bound is only a failure deadline,
    # generous for a loaded machine. The benchmark measures the real number (SPEC: 1 s).
    await wait_until(lambda: all(r.active == "b" for r in instances))
    for router in instances:
        assert await token_system(http, router) == "b"

    redis_server.command("SET", "tokenrouter:active", "a")
    await wait_until(lambda: all(r.active == "a" for r in instances))


async def test_resync_tick_catches_changes_without_keyspace_events(
    redis_server: RedisServer, gateways: dict[str, Gateway], routers: RouterFactory
) -> None:
    router = await routers(
        make_config(redis_server.url, gateways, keyspace_events=False, resync_interval=0.2)
    )
    redis_server.command("CONFIG", "SET", "notify-keyspace-events", "")
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: router.active == "b")


async def test_refused_value_keeps_last_valid_system(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways)
    instances = [await routers(config) for _ in range(2)]
    redis_server.command("SET", "tokenrouter:active", "http://evil.example.com")
    await wait_until(
        lambda: all(r.server.runtime.holder.current.refused is not None for r in instances)
    )
    for router in instances:
        assert router.active == "a"
        assert await token_system(http, router) == "a"
        ready = await admin_json(http, router, "/readyz")
        assert ready == {
            "status": "ready",
            "refused": "http://evil.example.com",
            "refused_reason": "unknown",
        }
        status = await admin_json(http, router, "/api/status")
        assert status["refused"]["value"] == "http://evil.example.com"
        assert status["active"] == "a"

    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: all(r.active == "b" for r in instances))
    assert all(r.server.runtime.holder.current.refused is None for r in instances)


async def test_redis_restart_under_traffic_fails_no_token_request(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, redis_retry_max=0.2))
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: router.active == "b")

    statuses: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            async with http.post(
                router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)
            ) as resp:
                await resp.read()
                statuses.append(resp.status)
                assert resp.headers["X-Token-Router-System"] == "b"

    async def keep_going(more: int) -> None:
        """Until `more` further requests were answered: what follows happened under traffic."""
        target = len(statuses) + more
        await wait_until(lambda: len(statuses) >= target, timeout=30)

    clients = [asyncio.create_task(client()) for _ in range(8)]
    await keep_going(20)
    redis_server.stop()
    holder = router.server.runtime.holder
    await wait_until(lambda: holder.degraded, timeout=10)
    ready = await admin_json(http, router, "/readyz")
    assert ready["status"] == "degraded"
    await keep_going(40)  # served while Redis is away
    before_restart = len(statuses)
    redis_server.start()  # empty: no persistence
    await wait_until(lambda: not holder.degraded, timeout=10)
    await keep_going(20)
    stop.set()
    await asyncio.gather(*clients)

    assert before_restart > 0
    assert len(statuses) > before_restart
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} failed"
    # The router re-seeded the system it kept routing to into the empty Redis.
    assert redis_server.command("GET", "tokenrouter:active").endswith("b")
    assert (await admin_json(http, router, "/readyz"))["status"] == "ready"


async def test_starts_fail_static_when_redis_is_down_then_recovers(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    redis_server.stop()
    router = await routers(make_config(redis_server.url, gateways, redis_retry_max=0.2))
    assert router.active == "a"
    async with http.get(router.admin_url + "/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["status"] == "starting"
    assert await token_system(http, router) == "a"  # fail-static on the default system
    redis_server.start()
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: router.active == "b", timeout=10)
    async with http.get(router.admin_url + "/readyz") as resp:
        assert resp.status == 200


async def test_memory_store_behaves_the_same_in_one_process(
    gateways: dict[str, Gateway], routers: RouterFactory, http: aiohttp.ClientSession
) -> None:
    router = await routers(make_config("memory://", gateways))
    store = router.server.runtime.store
    assert isinstance(store, MemoryStore)
    assert await token_system(http, router) == "a"
    store.set_active_raw("b")  # the in-process equivalent of a bare SET
    await wait_until(lambda: router.active == "b")
    assert await token_system(http, router) == "b"
    store.set_active_raw("nope")
    await wait_until(lambda: router.server.runtime.holder.current.refused is not None)
    assert router.active == "b"
    async with http.post(
        router.admin_url + "/api/switch",
        json={"system": "a"},
        headers={"Authorization": "Bearer test-admin-token"},
    ) as resp:
        assert resp.status == 200
    assert router.active == "a"  # the writing instance applies at once
