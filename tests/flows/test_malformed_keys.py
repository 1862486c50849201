"""Malformed values in the router's Redis namespace (issue 25): no value or type written with
redis-cli into any key the router uses stops a router from following `active`, wedges it,
splits the fleet or crashes a command. Real redis-server, real routers, real CLI processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.state.snapshot import Refusal
from tests.cli.test_cli import run
from tests.helpers import (
    ADMIN_AUTH,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    new_token,
    router_data,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.timeout(180)

PREFIX = "tokenrouter"
FAST = {"heartbeat_interval": 0.2, "rollout_tick": 0.05, "leader_ttl": 0.5, "gate_probe_age": 0.001}


async def readyz(http: aiohttp.ClientSession, router: RunningRouter) -> tuple[int, dict[str, Any]]:
    async with http.get(router.admin_url + "/readyz") as resp:
        return resp.status, await resp.json()


async def cli(*args: str) -> Any:
    return await asyncio.to_thread(run, *args)


def one_line(result: Any, codes: tuple[int, ...]) -> str:
    """A command's answer: a documented exit code, never a traceback; an error is one line."""
    assert "Traceback" not in result.stderr + result.stdout, result
    assert result.returncode in codes, result
    if result.returncode in (2, 3):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return str(result.stderr)


async def test_garbage_generation_never_freezes_the_fleet(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """`SET <prefix>:generation notanumber` froze every router for good (issue 25 item 1)."""
    config = make_config(redis_server.url, gateways, **FAST)
    fleet = [await routers(config), await routers(config)]
    await wait_until(lambda: all(r.server.runtime.holder.synced for r in fleet))
    redis_server.command("SET", f"{PREFIX}:generation", "notanumber")
    # A bare SET still moves every router, and /readyz names the key meanwhile.
    redis_server.command("SET", f"{PREFIX}:active", "b")
    await wait_until(lambda: all(r.active == "b" for r in fleet))
    for router in fleet:
        status, body = await readyz(http, router)
        assert status == 200 and body["status"] == "degraded", body
        assert f"{PREFIX}:generation" in body["error"], body

    # The CLI and the API answer (one line, documented exit codes; JSON, never a 500) and a
    # switch through them repairs the counter: confirmation by every router again.
    path = write_toml(tmp_path / "r.toml", router_data(redis_server.url, gateways, **FAST))
    one_line(await cli("status", "--config", str(path)), (0, 4))
    result = await cli("switch", "a", "--config", str(path))
    one_line(result, (0,))
    assert "applied by 2/2" in result.stdout, result.stdout
    assert all(r.active == "a" for r in fleet)
    async with http.post(
        fleet[0].admin_url + "/api/switch", json={"system": "b"}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200, await resp.text()
    await wait_until(lambda: all(r.active == "b" for r in fleet))

    # Garbage again, then fixed by hand: every router recovers with no restart.
    redis_server.command("SET", f"{PREFIX}:generation", "12x")
    redis_server.command("SET", f"{PREFIX}:active", "a")
    await wait_until(lambda: all(r.active == "a" for r in fleet))
    redis_server.command("SET", f"{PREFIX}:generation", "41")
    redis_server.command("SET", f"{PREFIX}:active", "b")
    await wait_until(lambda: all(r.active == "b" for r in fleet))
    for router in fleet:

        async def ready(router: RunningRouter = router) -> bool:
            return bool((await readyz(http, router))[1]["status"] == "ready")

        await wait_until(ready)
        assert router.server.runtime.holder.current.generation == 41
    # One leader at most, whatever happened.
    async with http.get(fleet[0].admin_url + "/api/instances", headers=ADMIN_AUTH) as resp:
        doc = await resp.json()
    assert sum(1 for i in doc["instances"] if i["leader"]) <= 1, doc


async def test_bare_sadd_of_the_active_system_is_refused_and_audited(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Issue 25 item 6: `SADD <prefix>:offline <active>` made every new token 503 with
    /readyz still ready, past the gate a bare SET of an offline system meets."""
    config = make_config(redis_server.url, gateways, **FAST)
    fleet = [await routers(config), await routers(config)]
    await wait_until(lambda: all(r.server.runtime.holder.synced for r in fleet))
    redis_server.command("SADD", f"{PREFIX}:offline", "a")
    await wait_until(
        lambda: all(
            (r.server.runtime.holder.current.refused or Refusal("", 0)).reason == "offline-mark"
            for r in fleet
        )
    )
    for router in fleet:
        assert router.active == "a" and not router.server.runtime.holder.current.is_offline("a")
        assert (await new_token(http, router))[1] == "a"  # not a 503
        status, body = await readyz(http, router)
        assert (body["status"], body["refused"], body["refused_reason"]) == (
            "ready",
            "a",
            "offline-mark",
        ), body
    path = write_toml(tmp_path / "r.toml", router_data(redis_server.url, gateways, **FAST))
    result = await cli("status", "--config", str(path))
    one_line(result, (4,))
    assert "REFUSED  'a' in the offline set" in result.stdout, result.stdout
    async with http.get(fleet[0].admin_url + "/api/audit", headers=ADMIN_AUTH) as resp:
        entries = (await resp.json())["entries"]
    refusals = [e for e in entries if e["action"] == "offline-refused"]
    assert len(refusals) == 1 and refusals[0]["to"] == "a", entries  # once, not per router

    # Removed again: nothing is refused any more. Forced through token-router, the active
    # system goes offline as the operator asked (503), as before.
    redis_server.command("SREM", f"{PREFIX}:offline", "a")
    await wait_until(lambda: all(r.server.runtime.holder.current.refused is None for r in fleet))
    result = await cli("offline", "a", "--force", "--config", str(path))
    one_line(result, (0,))
    await wait_until(lambda: all(r.server.runtime.holder.current.is_offline("a") for r in fleet))
    assert all(r.server.runtime.holder.current.refused is None for r in fleet)
    async with http.post(fleet[0].proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 503
    one_line(await cli("online", "a", "--config", str(path)), (0,))
    await wait_until(lambda: not any(r.server.runtime.holder.current.offline for r in fleet))
    assert redis_server.command("EXISTS", f"{PREFIX}:offline:forced") == ":0"
