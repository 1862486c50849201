"""Drain as an operator sees it: one verdict on page/API, /metrics, CLI `status` and
`drain-wait`, the gateway's count deciding, short codes counting only for shortcode_ttl."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from router.config import load_config
from tests.cli.test_cli import run
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

AUTH = {"Authorization": "Bearer test-admin-token"}


async def api_row(http: aiohttp.ClientSession, router: RunningRouter, sid: str) -> dict[str, Any]:
    async with http.get(router.admin_url + "/api/status", headers=AUTH) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
    return next(s for s in doc["systems"] if s["id"] == sid)


async def metric(http: aiohttp.ClientSession, router: RunningRouter, name: str) -> float | None:
    async with http.get(router.admin_url + "/metrics") as resp:
        text = await resp.text()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return None if m is None else float(m.group(1))


async def new_token(http: aiohttp.ClientSession, router: RunningRouter) -> str:
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as resp:
        assert resp.status == 200
        return str((await resp.json())["sessionid"])


async def cli(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(run, *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout


async def test_gateway_count_decides_on_every_surface(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    data = router_data(redis_server.url, gateways)
    data["systems"]["a"]["stats_url"] = gateways["a"].url + "/stats"
    path = write_toml(tmp_path / "router.toml", data)
    cfg = ("--config", str(path))
    router = await routers(load_config(path, {}))
    sid = await new_token(http, router)
    await router.server.runtime.affinity.flush()  # its record reaches Redis behind the answer
    # A session the router never issued (another web app, a router restarted empty...).
    gateways["a"].state.sessions.add("a-elsewhere")
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: router.active == "b")

    # The gateway's count is at most a second old (the drain sampler may have just read it).
    async def counted_elsewhere() -> bool:
        return bool((await api_row(http, router, "a"))["gateway_open"] == 2)

    await wait_until(counted_elsewhere)
    row = await api_row(http, router, "a")
    assert (row["state"], row["open"], row["source"], row["router_open"], row["gateway_open"]) == (
        "draining",
        2,
        "gateway",
        1,
        2,
    )
    assert await metric(http, router, 'tokenrouter_drain_open{source="gateway",system="a"}') == 2
    assert await metric(http, router, 'tokenrouter_drained{system="a"}') == 0
    assert await metric(http, router, 'tokenrouter_open_items{system="a"}') == 1
    code, out = await cli("status", "--json", *cfg)
    assert code == 0
    cli_row = next(s for s in orjson.loads(out)["systems"] if s["id"] == "a")
    assert (cli_row["state"], cli_row["open"], cli_row["source"], cli_row["router_open"]) == (
        "draining",
        2,
        "gateway",
        1,
    )
    code, out = await cli("status", *cfg)
    assert re.search(r"^a\s+draining\s+2\s+2\s+1\s", out, re.MULTILINE), out
    code, out = await cli(
        "drain-wait", "a", "--json", "--timeout", "0.3", "--interval", "0.1", *cfg
    )
    assert code == 1
    last = orjson.loads(out.strip().splitlines()[-1])
    assert (last["result"], last["open"], last["source"], last["drained"]) == (
        "timeout",
        2,
        "gateway",
        False,
    )
    assert {"drain_rate", "drain_eta", "router_open", "gateway_open", "states"} <= set(last)

    # Released through the router: its own count drops at once; the gateway still has one.
    async with http.delete(router.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 204
    await router.server.runtime.affinity.flush()

    async def gateway_says(expected: tuple[Any, ...]) -> bool:
        # The gateway's count is at most the prober's max_age (1 s) old.
        row = await api_row(http, router, "a")
        return (row["state"], row["open"], row["router_open"], row["drained"]) == expected

    await wait_until(lambda: gateway_says(("draining", 1, 0, False)), timeout=5, interval=0.1)
    # Deleted at the gateway itself: the simulator's stats follow, and every surface agrees.
    async with http.delete(gateways["a"].url + "/gateway/sessions/session/id/a-elsewhere") as resp:
        assert resp.status == 204
    await wait_until(lambda: gateway_says(("drained", 0, 0, True)), timeout=5, interval=0.1)
    assert await metric(http, router, 'tokenrouter_drained{system="a"}') == 1
    code, out = await cli("drain-wait", "a", "--json", "--timeout", "5", "--interval", "0.1", *cfg)
    assert code == 0
    assert orjson.loads(out.strip().splitlines()[-1])["result"] == "drained"
    code, out = await cli("drain-wait", "a", "--timeout", "5", *cfg)
    assert code == 0
    assert "a: drained, 0 open (gateway), router count 0" in out
    assert "a is drained" in out


async def test_consumed_short_code_stops_counting_after_shortcode_ttl(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    from tests.helpers import make_config

    router = await routers(
        make_config(redis_server.url, gateways, shortcode_ttl=1, affinity_ttl=600)
    )
    async with http.put(router.proxy_url + "/assistserver/shortcode/create") as resp:
        code = (await resp.json())["shortCode"]
    sid = await new_token(http, router)
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: router.active == "b")
    await router.server.runtime.affinity.flush()
    assert (await api_row(http, router, "a"))["open"] == 2

    async def only_token_left() -> bool:
        return bool((await api_row(http, router, "a"))["open"] == 1)

    await wait_until(only_token_left, timeout=10, interval=0.2)
    # The code no longer holds drain, but its affinity lives on: look-ups still reach a.
    async with http.get(
        router.proxy_url + "/assistserver/shortcode/agent", params={"appkey": code}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Token-Router-System"] == "a"
    assert redis_server.command("TTL", f"tokenrouter:aff:code:{code}").lstrip(":").isdigit()
    assert int(redis_server.command("TTL", f"tokenrouter:aff:code:{code}").lstrip(":")) > 500
    async with http.delete(router.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 204
    await router.server.runtime.affinity.flush()
    assert (await api_row(http, router, "a"))["state"] == "drained"
