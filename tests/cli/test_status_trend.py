"""A one-shot `token-router status` shows the drain trend a router has been measuring: the
rate, estimate and stall of the router's `/api/status` (its admin listener samples the counts
every 2 s during a drain), in the same words, and says where it came from; with no router
to ask it says "measuring the rate", as before, with the same exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.config import load_config
from tests.cli.test_cli import cli
from tests.helpers import (
    ADMIN_AUTH,
    HOST,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    free_port,
    issued_everywhere,
    new_token,
    router_data,
    switch_to,
    wait_until,
    write_toml,
)


async def api_a(http: aiohttp.ClientSession, router: RunningRouter) -> dict[str, Any]:
    async with http.get(router.admin_url + "/api/status", headers=ADMIN_AUTH) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
    return next(s for s in doc["systems"] if s["id"] == "a")


def row(text: str, system: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{system} "))


async def relay_to(router: RunningRouter, seen: list[dict[str, Any]]) -> web.AppRunner:
    """A loopback relay in front of the router's admin API that keeps every `/api/status`
    answer it passed on: what `status` received, at the moment it asked."""

    async def status(request: web.Request) -> web.Response:
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with (
            aiohttp.ClientSession() as session,
            session.get(router.admin_url + "/api/status", headers=headers) as resp,
        ):
            body = await resp.read()
            if resp.status == 200:
                seen.append(orjson.loads(body))
            return web.Response(body=body, status=resp.status, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner


async def test_one_shot_status_shows_the_trend_the_router_measures(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    port = free_port()
    data = router_data(redis_server.url, gateways, heartbeat_interval=0.2)
    data["router"]["admin_listen"] = f"{HOST}:{port}"  # where a one-shot `status` asks
    config = write_toml(tmp_path / "router.toml", data)
    cfg = ("--config", str(config))
    router = await routers(load_config(config, {}))
    sessions = [(await new_token(http, router))[0] for _ in range(12)]
    await issued_everywhere(router)
    await switch_to(redis_server, [router], "b")
    # a drains: half its calls end at once; the router samples the fall.
    for sid in sessions[:6]:
        async with http.delete(router.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
            assert resp.status < 300, await resp.text()

    async def rate_reported() -> bool:
        a = await api_a(http, router)
        return a["open"] == 6 and a["drain_rate"] is not None and a["drain_rate"] > 0

    await wait_until(rate_reported, timeout=60, interval=0.2)

    # The configured router.admin_listen: its trend, and where it came from.
    result = await cli("status", *cfg)
    assert result.returncode == 0, result
    assert row(result.stdout, "a").split()[1:3] == ["draining", "6"]
    assert "falling " in row(result.stdout, "a") and "to 0" in row(result.stdout, "a")
    assert f"(DRAIN: trend from router {HOST}:{port})" in result.stdout
    assert "measuring the rate" not in result.stdout

    # The same words as the router's /api/status at the moment `status` asked it.
    seen: list[dict[str, Any]] = []
    relay = await relay_to(router, seen)
    try:
        site = web.TCPSite(relay, HOST, 0)
        await site.start()
        relay_url = f"http://{HOST}:{relay.addresses[0][1]}"
        result = await cli("status", "--json", "--router", relay_url, *cfg)
        assert result.returncode == 0, result
        doc = orjson.loads(result.stdout)
        answer = {s["id"]: s for s in seen[-1]["systems"]}
        instance = router.server.runtime.instance
        assert doc["trend_from"] == {"source": "router", "url": relay_url, "instance": instance}
        for system in doc["systems"]:
            measured = answer[system["id"]]
            for field in ("badge", "open", "estimate", "drain_rate", "drain_eta", "stalled"):
                assert system[field] == measured[field], (field, system, measured)
        assert doc["systems"][0]["estimate"].startswith("falling ")

        result = await cli("status", "--router", relay_url, *cfg)
        assert result.returncode == 0, result
        estimate = next(s for s in seen[-1]["systems"] if s["id"] == "a")["estimate"]
        assert estimate.startswith("falling ")
        assert row(result.stdout, "a").endswith(" " + estimate)
        assert row(result.stdout, "a").split()[1:3] == ["draining", "6"]
    finally:
        await relay.cleanup()

    # No router answers: the one reading says nothing of a rate, and the exit code is as ever.
    silent = f"http://{HOST}:{free_port()}"
    result = await cli("status", "--router", silent, *cfg)
    assert result.returncode == 0, result
    assert row(result.stdout, "a").endswith("measuring the rate")
    assert f"(DRAIN: no router's trend ({HOST}:" in result.stdout
    result = await cli("status", "--json", "--router", silent, *cfg)
    assert result.returncode == 0, result
    doc = orjson.loads(result.stdout)
    assert doc["trend_from"]["source"] is None and doc["trend_from"]["asked"] == [silent]
    assert doc["systems"][0]["estimate"] == "measuring the rate"
