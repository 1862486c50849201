"""The post-switch watch and the rollout's latency abort, end to end: two real routers, real
Redis, simulated systems over real sockets. Windows are seconds through the configuration;
every wait is on a condition with a generous bound."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from router.config import build_config
from tests.admin.test_guarded_api import FAST, api, audit, instance_count
from tests.helpers import (
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    router_data,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.timeout(180)

# Long enough that a busy machine still judges within it, short enough for a test.
WATCHED = {"watch_span": 30, "watch_min_requests": 10, **FAST}


async def two_routers(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    **options: Any,
) -> list[RunningRouter]:
    data = router_data(redis_server.url, gateways, **{**WATCHED, **options})
    config = build_config(data, {})
    instances = [await routers(config) for _ in range(2)]
    await wait_until(lambda: instance_count(redis_server) == 2, timeout=10)
    return instances


async def tokens(
    http: aiohttp.ClientSession, instances: list[RunningRouter], n: int, **headers: str
) -> list[int]:
    """`n` token requests spread over the instances, 8 at a time; their statuses."""
    out: list[int] = []
    body = orjson.dumps(SESSION_BODY)

    async def worker(i: int) -> None:
        for k in range(i, n, 8):
            router = instances[k % len(instances)]
            async with http.post(router.proxy_url + SESSION_PATH, data=body, headers=headers) as r:
                await r.read()
                out.append(r.status)

    await asyncio.gather(*(worker(i) for i in range(8)))
    return out


async def status_watch(http: aiohttp.ClientSession, router: RunningRouter) -> dict[str, Any]:
    code, doc = await api(http, router, "/api/status", method="GET")
    assert code == 200
    return doc["watch"] or {}


async def watch_state(http: aiohttp.ClientSession, router: RunningRouter) -> str:
    return str((await status_watch(http, router)).get("state", ""))


async def fail(gateway: Gateway, status: int = 500) -> None:
    body = {"status": status, "count": None}
    async with aiohttp.ClientSession() as http, http.post(gateway.url + "/_sim/fail", json=body):
        pass


async def switch(http: aiohttp.ClientSession, router: RunningRouter, system: str) -> None:
    code, doc = await api(http, router, "/api/switch", {"system": system})
    assert code == 200, doc


def leader_ticks(instances: list[RunningRouter]) -> int:
    return sum(r.server.runtime.watch.ticks for r in instances if r.server.runtime.watch)


async def test_a_target_failing_after_the_switch_is_undone_once_and_never_again(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await two_routers(redis_server, gateways, routers, post_switch_watch=60)
    first = instances[0]
    # Some healthy traffic to a first: the baseline the watch compares with.
    assert set(await tokens(http, instances, 30)) == {200}
    await switch(http, first, "b")
    await wait_until(lambda: all(r.active == "b" for r in instances), timeout=10)
    await wait_until(lambda: watch_state_is(http, first, "watching"), timeout=20)
    watch = await status_watch(http, instances[1])
    assert (watch["system"], watch["previous"], watch["state"]) == ("b", "a", "watching")
    assert 0 < watch["left"] <= 60 and "failed share of token requests to b" in watch["measures"]
    # b starts failing: token requests fail until the watch switches back to a.
    await fail(gateways["b"])
    statuses: list[int] = []

    async def still_b() -> bool:
        statuses.extend(await tokens(http, instances, 8))
        return all(r.active == "a" for r in instances)

    await wait_until(still_b, timeout=40, interval=0.05)
    assert statuses.count(500) >= 10  # the watch measured failures, then undid
    assert set(await tokens(http, instances, 20)) == {200}  # new sessions on a again
    entries = await audit(http, first)
    undos = [e for e in entries if e["action"] == "auto-undo"]
    assert len(undos) == 1, entries
    undo = undos[0]
    assert (undo["from"], undo["to"]) == ("b", "a")
    assert undo["source"].startswith("post-switch watch (")
    reason = undo["reason"]
    assert reason.startswith("failed share ") and "token requests failed" in reason
    assert "a: 0 of " in reason and "before the switch" in reason  # the baseline's figures
    assert "watch window 60 s from switch a -> b" in reason
    await wait_until(lambda: watch_state_is(http, instances[1], "undone"), timeout=10)
    watch = await status_watch(http, instances[1])
    assert watch["line"].startswith("UNDONE by the watch: b -> a") and watch["left"] == 0
    async with http.get(instances[1].admin_url + "/metrics") as resp:
        text = await resp.text()
    assert 'tokenrouter_watch_state{previous="a",state="undone",system="b"} 1.0' in text
    assert "tokenrouter_watch_alarm 0.0" in text
    # No flapping: many leader ticks later, nothing switched forward, no second undo, and
    # the undo itself started no watch.
    ticks = leader_ticks(instances)
    await wait_until(lambda: leader_ticks(instances) >= ticks + 40, timeout=30)
    assert all(r.active == "a" for r in instances)
    later = await audit(http, first)
    assert [e["action"] for e in later[: len(later) - len(entries)]] == []
    assert (await status_watch(http, first))["id"] == watch["id"]


async def watch_state_is(http: aiohttp.ClientSession, router: RunningRouter, state: str) -> bool:
    return await watch_state(http, router) == state


async def test_a_healthy_target_is_not_undone_and_the_watch_passes(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await two_routers(redis_server, gateways, routers, post_switch_watch=2)
    await switch(http, instances[0], "b")
    await wait_until(lambda: all(r.active == "b" for r in instances), timeout=10)

    async def passed() -> bool:
        await tokens(http, instances, 8)
        return await watch_state(http, instances[1]) == "passed"

    await wait_until(passed, timeout=30, interval=0.05)
    watch = await status_watch(http, instances[1])
    assert watch["current"]["failures"] == 0 and watch["current"]["requests"] >= 10
    assert watch["line"].startswith("the watch of b passed: b: 0 of ")
    assert all(r.active == "b" for r in instances)
    actions = [e["action"] for e in await audit(http, instances[0])]
    assert "auto-undo" not in actions and "watch-alarm" not in actions


async def test_an_offline_old_system_blocks_the_undo_and_raises_the_alarm(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    instances = await two_routers(redis_server, gateways, routers, post_switch_watch=60)
    first = instances[0]
    await switch(http, first, "b")
    await wait_until(lambda: all(r.active == "b" for r in instances), timeout=10)
    await wait_until(lambda: watch_state_is(http, first, "watching"), timeout=20)
    # a goes offline for its own upgrade while the watch runs; then b fails.
    code, doc = await api(http, first, "/api/systems/a/offline", {})
    assert code == 200, doc
    await fail(gateways["b"], 503)

    async def alarm() -> bool:
        await tokens(http, instances, 8)
        return await watch_state(http, instances[1]) == "alarm"

    await wait_until(alarm, timeout=40, interval=0.05)
    assert all(r.active == "b" for r in instances)  # not undone to an offline system
    entries = await audit(http, first)
    alarms = [e for e in entries if e["action"] == "watch-alarm"]
    assert len(alarms) == 1 and not [e for e in entries if e["action"] == "auto-undo"]
    assert "; no undo: " in alarms[0]["reason"] and "offline" in alarms[0]["reason"]
    watch = await status_watch(http, instances[1])
    assert watch["line"].startswith("ALARM: b breached the watch and was not undone")
    async with http.get(instances[1].admin_url + "/metrics") as resp:
        assert "tokenrouter_watch_alarm 1.0" in await resp.text()
    # `token-router status` says so too, with what to do.
    path = write_toml(
        tmp_path / "router.toml",
        router_data(redis_server.url, gateways, **{**WATCHED, "post_switch_watch": 60}),
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "router", "status", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "watch    ALARM: b breached the watch and was not undone" in result.stdout, result
    assert "(token-router online a) and run token-router undo" in result.stdout


async def test_a_bare_set_is_watched_and_undone_too(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await two_routers(redis_server, gateways, routers, post_switch_watch=60)
    await fail(gateways["b"], 502)
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: all(r.active == "b" for r in instances), timeout=10)

    async def back() -> bool:
        await tokens(http, instances, 8)
        return all(r.active == "a" for r in instances)

    await wait_until(back, timeout=40, interval=0.05)
    [undo] = [e for e in await audit(http, instances[0]) if e["action"] == "auto-undo"]
    assert "from switch a -> b" in undo["reason"]


async def test_a_target_slower_than_the_threshold_aborts_a_rollout_step(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await two_routers(redis_server, gateways, routers, post_switch_watch=0)
    body = {
        "system": "b",
        "steps": [50, 100],
        "interval": 3600,
        "min_requests": 10,
        "max_latency": 0.2,
        "latency_factor": 0,
    }
    code, doc = await api(http, instances[0], "/api/rollout", body)
    assert code == 201, doc
    assert doc["rollout"]["max_latency"] == 0.2
    # b answers, correctly but 0.35 s late (its health probe too, well within its timeout).
    async with http.post(gateways["b"].url + "/_sim/slow", json={"delay": 0.35}) as resp:
        assert resp.status == 200
    statuses = await tokens(http, instances, 16, **{"X-Token-Router-Prefer": "b"})
    assert set(statuses) == {200}

    def ended() -> bool:
        return all(r.server.runtime.holder.current.rollout is None for r in instances)

    await wait_until(ended, timeout=30)
    code, doc = await api(http, instances[1], "/api/rollout", method="GET")
    r = doc["rollout"]
    assert r["state"] == "aborted" and all(x.active == "a" for x in instances)
    assert r["end_reason"].startswith("token requests to b in step 1 too slow: p99 ")
    assert "> 200 ms" in r["end_reason"]
    entry = next(e for e in await audit(http, instances[0]) if e["action"] == "rollout-abort")
    assert entry["source"].startswith("rollout controller (")
