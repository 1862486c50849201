"""The critical flows against a gateway double written from FCSDK-API.md alone.

tests/strict_gateway.py answers only what the contract documents (`{"sessionid"}`, a DELETE
204, no header of ours, no echo) and reports its calls as operators' monitoring does: a JSON
status page of its own shape and a Prometheus exporter. If a flow here needs anything the
simulator does beyond that, the product leans on a habit of our own simulator: a defect.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from router.config import build_config, load_config
from tests.helpers import (
    ADMIN_AUTH,
    ADMIN_TOKEN,
    HOST,
    REDIS_TIMEOUT,
    SESSION_BODY,
    SESSION_PATH,
    RedisServer,
    RouterFactory,
    RouterProcess,
    RunningRouter,
    free_port,
    issued_everywhere,
    switch_to,
    wait_ready,
    wait_until,
    write_toml,
)
from tests.strict_gateway import JSON_PATH, PROMETHEUS_PATH, StrictGateway

# Whole upgrades, first release checks and two-worker routers on a loaded machine: each is
# bounded on its own conditions; this only stops a hang.
pytestmark = pytest.mark.timeout(300)

PREVIEW_SECRET = "strict-preview-secret"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")}


@pytest.fixture
async def doubles() -> AsyncIterator[dict[str, StrictGateway]]:
    started = {
        "a": await StrictGateway("a", "4.1").start(),
        "b": await StrictGateway("b", "4.2").start(),
    }
    try:
        yield started
    finally:
        for double in started.values():
            await double.stop()


def strict_data(redis_url: str, doubles: dict[str, StrictGateway], **router: Any) -> dict[str, Any]:
    """a's count from a JSON pointer into its status page, b's from a Prometheus gauge; the
    public URLs are the doubles' own (the upgrade's preflight connects to them)."""
    a, b = doubles["a"], doubles["b"]
    return {
        "router": {
            "listen": f"{HOST}:0",
            "admin_listen": f"{HOST}:0",
            "redis_url": redis_url,
            "admin_token": ADMIN_TOKEN,
            "access_log": False,
            "resync_interval": 0.5,
            "redis_timeout": REDIS_TIMEOUT,
            "preview_secret": PREVIEW_SECRET,
            # As tests.helpers.router_data: the post-switch watch is issue 28's tests' business.
            "post_switch_watch": 0,
            **router,
        },
        "systems": {
            "a": {
                "gateway": a.url,
                "public_url": a.url,
                "stats_url": a.url + JSON_PATH,
                "stats_count": "/calls/active",
            },
            "b": {
                "gateway": b.url,
                "public_url": b.url,
                "stats_url": b.url + PROMETHEUS_PATH,
                "stats_format": "prometheus",
                "stats_metric": 'media_broker_calls{state="active"}',
            },
        },
    }


@pytest.fixture
async def strict_router(
    redis_server: RedisServer, doubles: dict[str, StrictGateway], routers: RouterFactory
) -> RunningRouter:
    data = strict_data(redis_server.url, doubles, release_paths=[])
    return await routers(build_config(data, {}))


async def mint(http: aiohttp.ClientSession, router: RunningRouter) -> tuple[str, str]:
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200, await r.text()
        doc = await r.json()
        assert list(doc) == ["sessionid"]
        return str(doc["sessionid"]), r.headers["X-Token-Router-System"]


async def systems_of(http: aiohttp.ClientSession, router: RunningRouter) -> dict[str, Any]:
    async with http.get(router.admin_url + "/api/status", headers=ADMIN_AUTH) as resp:
        doc: dict[str, Any] = await resp.json()
    return {s["id"]: s for s in doc["systems"]}


async def test_token_hop_and_follow_ups(
    strict_router: RunningRouter,
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    http: aiohttp.ClientSession,
) -> None:
    router = strict_router
    sid_a, system = await mint(http, router)
    assert system == "a" and sid_a in doubles["a"].sessions
    sent = doubles["a"].received[-1]["urlSchemeDetails"]
    assert sent == {"secure": False, "host": HOST, "port": doubles["a"].url.rsplit(":", 1)[1]}
    async with http.put(router.proxy_url + "/assistserver/shortcode/create") as resp:
        assert resp.status == 200 and resp.headers["X-Token-Router-System"] == "a"
        code = (await resp.json())["shortCode"]
    await issued_everywhere(router)

    await switch_to(redis_server, [router], "b")
    sid_b, system = await mint(http, router)
    assert system == "b" and sid_b in doubles["b"].sessions
    assert (
        doubles["b"].received[-1]["urlSchemeDetails"]["port"] == doubles["b"].url.rsplit(":", 1)[1]
    )
    # Everything a issued keeps reaching a.
    for path in ("consumer", "agent"):
        url = f"{router.proxy_url}/assistserver/shortcode/{path}?appkey={code}"
        async with http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Token-Router-System"] == "a"
    async with http.post(router.proxy_url + "/assistserver/agent", data={"appkey": code}) as resp:
        assert resp.status == 200 and resp.headers["X-Token-Router-System"] == "a"
    async with http.delete(f"{router.proxy_url}{SESSION_PATH}/id/{sid_a}") as resp:
        assert resp.status == 204 and resp.headers["X-Token-Router-System"] == "a"
    assert sid_a not in doubles["a"].sessions
    async with http.delete(f"{router.proxy_url}{SESSION_PATH}/id/{sid_b}") as resp:
        assert resp.status == 204 and resp.headers["X-Token-Router-System"] == "b"


async def test_drain_reads_a_json_pointer_and_a_prometheus_gauge(
    strict_router: RunningRouter,
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    http: aiohttp.ClientSession,
) -> None:
    router = strict_router
    sid, _ = await mint(http, router)
    doubles["a"].sessions.add("reached-a-another-way")  # the router never saw this one
    await switch_to(redis_server, [router], "b")
    await mint(http, router)
    await issued_everywhere(router)

    async def counted() -> bool:
        # A gateway's count may be up to a second old (the prober's cache): wait for it.
        systems = await systems_of(http, router)
        a, b = systems["a"], systems["b"]
        return (a["state"], a["open"], a["source"], a["router_open"]) == (
            "draining",
            2,
            "gateway",
            1,
        ) and (b["state"], b["gateway_open"], b["source"]) == ("active", 1, "gateway")

    await wait_until(counted, timeout=20)
    async with http.delete(f"{router.proxy_url}{SESSION_PATH}/id/{sid}") as resp:
        assert resp.status == 204
    doubles["a"].sessions.clear()  # its last call ended
    await wait_until(lambda: _drained(http, router), timeout=20)


async def _drained(http: aiohttp.ClientSession, router: RunningRouter) -> bool:
    a = (await systems_of(http, router))["a"]
    return bool(a["drained"]) and a["open"] == 0 and a["source"] == "gateway"


async def test_a_selector_that_matches_nothing_is_never_drained(
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    data = strict_data(redis_server.url, doubles, release_paths=[])
    data["systems"]["b"]["stats_metric"] = 'media_broker_calls{state="ringing"}'
    router = await routers(build_config(data, {}))
    b = (await systems_of(http, router))["b"]
    assert (b["state"], b["open"], b["source"]) == ("draining", None, "unknown")
    assert 'no sample media_broker_calls{state="ringing"}' in b["gateway_error"]


# --- `token-router upgrade b` end to end ----------------------------------------------------


@pytest.fixture
async def upgrade_setup(
    tmp_path: Path,
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    routers: RouterFactory,
) -> AsyncIterator[tuple[Path, RunningRouter]]:
    data = strict_data(
        redis_server.url,
        doubles,
        heartbeat_interval=0.2,
        rollout_tick=0.1,
        leader_ttl=0.6,
        gate_probe_age=0.001,
        release_dir=str(tmp_path / "releases"),
    )
    path = write_toml(tmp_path / "router.toml", data)
    router = await routers(load_config(path, {}))
    path.write_text(
        path.read_text().replace(f'listen = "{HOST}:0"', f'listen = "{router.proxy_url[7:]}"', 1)
    )
    await wait_until(lambda: router.server.runtime.releases.view.release_of("b") is not None, 90)
    yield path, router


async def test_upgrade_end_to_end_with_preview_rollout_and_drain(
    upgrade_setup: tuple[Path, RunningRouter],
    doubles: dict[str, StrictGateway],
    http: aiohttp.ClientSession,
) -> None:
    config, router = upgrade_setup
    sid, _ = await mint(http, router)  # a holds a call: the drain waits for it
    await issued_everywhere(router)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "upgrade",
        "b",
        "--yes",
        "--steps",
        "50,100",
        "--interval",
        "1",
        "--drain-timeout",
        "120",
        "--config",
        str(config),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert proc.stdout is not None
    seen = b""
    try:
        while b"a: draining, 1 open (gateway)" not in seen:
            line = await asyncio.wait_for(proc.stdout.readline(), 90)
            assert line, seen.decode()
            seen += line
        async with http.delete(f"{router.proxy_url}{SESSION_PATH}/id/{sid}") as resp:
            assert resp.status == 204 and resp.headers["X-Token-Router-System"] == "a"
        rest, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = (seen + rest).decode()
    assert proc.returncode == 0, out + err.decode()
    b = doubles["b"]
    for want in (
        "[ok  ] preview token: minted ",
        f"[ok  ] urlSchemeDetails: names {b.url}, sent (dry rewrite)",
        "[ok  ] release handed out: the router hands out ",
        "[ok  ] token released: DELETE answered 204 from b",
        "[ok  ] library /v/ path: ",
        "rollout promoted: b active",
        "a holds no calls after",
        "upgrade done: new sessions go to b; a is drained",
    ):
        assert want in out, out
    # The smoke token reached b through the preview credential and was released there.
    assert b.received[0]["webAppId"] == "token-router-upgrade-smoke"
    assert b.received[0]["urlSchemeDetails"]["host"] == HOST
    assert await mint(http, router) and router.active == "b"


# --- releases fresh where it matters --------------------------------------------------------


@pytest.fixture
async def b_upgraded_unnoticed(
    tmp_path: Path,
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    routers: RouterFactory,
) -> tuple[RunningRouter, str | None]:
    """A router that stored b's release, then b upgraded in place behind its back, with the
    next periodic check an hour away: (the router, b's old release)."""
    data = strict_data(
        redis_server.url,
        doubles,
        release_check_interval=3600,
        release_dir=str(tmp_path / "releases"),
    )
    router = await routers(build_config(data, {}))
    releases = router.server.runtime.releases
    await wait_until(lambda: releases.view.release_of("b") is not None, 90)
    old = releases.view.release_of("b")
    doubles["b"].version = "4.3"
    return router, old


async def test_a_bare_set_after_an_upgrade_behind_the_routers_back_serves_the_new_bytes(
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    b_upgraded_unnoticed: tuple[RunningRouter, str | None],
    http: aiohttp.ClientSession,
) -> None:
    """b upgraded with nobody telling the router, then `redis-cli SET active b`: the change
    of the active system makes the router check b's libraries at once, not at its next
    periodic check (an hour away here)."""
    router, old = b_upgraded_unnoticed
    new_bytes = doubles["b"].library("/gateway/adapter.js")

    async def serves_new_bytes() -> bool:
        async with http.get(router.proxy_url + "/router/current") as resp:
            current = await resp.json()
        if current["system"] != "b" or current["release"] in (None, old):
            return False
        async with http.get(f"{router.proxy_url}{current['base']}/gateway/adapter.js") as resp:
            return resp.status == 200 and await resp.read() == new_bytes

    redis_server.command("SET", "tokenrouter:active", "b")
    # Bounded generously for a loaded machine: a new release is compressed before it is
    # stored; what matters is that it comes now, not at the periodic check an hour away.
    await wait_until(serves_new_bytes, timeout=90)


async def test_a_switch_fingerprints_its_target_through_the_gates(
    b_upgraded_unnoticed: tuple[RunningRouter, str | None],
    http: aiohttp.ClientSession,
) -> None:
    """`POST /api/switch`: past the gates, b's libraries are checked before the switch is
    written, so the answer comes back with b's current release already stored."""
    router, old = b_upgraded_unnoticed
    releases = router.server.runtime.releases
    async with http.post(
        router.admin_url + "/api/switch", json={"system": "b"}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200, await resp.text()
    fresh = releases.view.release_of("b")
    assert fresh not in (None, old)
    listing, serving = await releases.view.listing()
    assert serving["b"] == fresh


# --- a drain that does not end --------------------------------------------------------------


async def test_what_holds_a_drain_is_listed_and_a_timeout_says_what_to_do(
    tmp_path: Path,
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    data = strict_data(redis_server.url, doubles, release_paths=[])
    for table in data["systems"].values():  # the routers' count decides here
        for key in ("stats_url", "stats_count", "stats_format", "stats_metric"):
            table.pop(key, None)
    config = write_toml(tmp_path / "router.toml", data)
    router = await routers(load_config(config, {}))
    sid, _ = await mint(http, router)
    async with http.put(router.proxy_url + "/assistserver/shortcode/create") as resp:
        code = (await resp.json())["shortCode"]
    await issued_everywhere(router)
    await switch_to(redis_server, [router], "b")

    url = f"{router.admin_url}/api/systems/a/open-items?limit=10"
    async with http.get(url, headers=ADMIN_AUTH) as resp:
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
    assert doc["system"] == "a" and doc["total"] == 2
    assert {(i["kind"], i["id"]) for i in doc["items"]} == {("session", sid), ("code", code)}
    for item in doc["items"]:
        assert item["issuer"] == router.server.runtime.instance
        assert 0 <= item["age"] < 60 and item["expires_at"] > item["issued_at"]
    async with http.get(router.admin_url + "/api/systems/a/open-items") as resp:
        assert resp.status == 401  # a read of the admin API, like /api/status

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "drain-wait",
        "a",
        "--timeout",
        "0.5",
        "--interval",
        "0.2",
        "--config",
        str(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, out.decode() + err.decode()
    text = err.decode()
    assert "timed out after 0.5 s" in text
    assert "a: 2 open items the routers know" in text
    assert sid in text and code in text and router.server.runtime.instance in text
    assert f"`token-router open-items a --config {config.resolve()}`" in text
    assert "Media Brokers down gracefully" in text
    assert f'`token-router offline a --force --reason "..." --config {config.resolve()}`' in text

    # The deleted token no longer holds a.
    async with http.delete(f"{router.proxy_url}{SESSION_PATH}/id/{sid}") as resp:
        assert resp.status == 204
    await router.server.runtime.affinity.flush()
    result = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "open-items",
        "a",
        "--json",
        "--config",
        str(config),
        stdout=subprocess.PIPE,
        env=ENV,
    )
    listed, _ = await asyncio.wait_for(result.communicate(), 60)
    assert result.returncode == 0
    doc = orjson.loads(listed)
    assert doc["total"] == 1 and doc["items"][0]["id"] == code


async def test_one_version_per_system_on_every_surface(
    tmp_path: Path,
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """a's config says 4.0, its gateway reports 4.1 (what it serves): the page, /api/status
    and `status` all say 4.1, the label of the release a serves."""
    data = strict_data(redis_server.url, doubles, release_dir=str(tmp_path / "releases"))
    data["systems"]["a"]["version"] = "4.0"
    config = write_toml(tmp_path / "router.toml", data)
    router = await routers(load_config(config, {}))
    releases = router.server.runtime.releases
    await wait_until(lambda: releases.view.label_of("a") == "4.1", 90)
    assert (await systems_of(http, router))["a"]["version"] == "4.1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "status",
        "--json",
        "--config",
        str(config),
        stdout=subprocess.PIPE,
        env=ENV,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    doc = orjson.loads(out)
    assert {s["id"]: s["version"] for s in doc["systems"]}["a"] == "4.1"
    async with http.get(router.admin_url + "/api/live", headers=ADMIN_AUTH) as resp:
        live = await resp.json()
    page = {s["id"]: s for s in live["systems"]}["a"]
    assert page["release"]["label"] == page["version"] == "4.1"


async def test_a_prometheus_count_with_several_workers(
    tmp_path: Path,
    redis_server: RedisServer,
    doubles: dict[str, StrictGateway],
    http: aiohttp.ClientSession,
) -> None:
    """Checking stats_metric imports prometheus_client's parser: with --workers 2 that must
    come after the metrics' multiprocess set-up, or the router refuses to start."""
    proxy, admin = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    data = strict_data(
        redis_server.url, doubles, release_paths=[], listen=proxy, admin_listen=admin
    )
    router = RouterProcess(write_toml(tmp_path / "router.toml", data), workers=2, env=ENV)
    router.start()
    try:
        await wait_ready(f"http://{admin}")
        doubles["b"].sessions.add("one-call")

        async def counted() -> bool:
            async with http.get(f"http://{admin}/api/status", headers=ADMIN_AUTH) as resp:
                b = {s["id"]: s for s in (await resp.json())["systems"]}["b"]
            return (b["gateway_open"], b["source"]) == (1, "gateway")

        await wait_until(counted, timeout=20)
    finally:
        router.kill()
