"""Redis Sentinel: a real master, replica and three sentinels; failover under token load."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis

from router.cli.serve import preflight_sentinels
from router.config import build_config
from router.errors import ConfigError
from router.state.sentinel import SentinelTarget, redis_target
from tests.cli.test_cli import one_line_error, run
from tests.helpers import (
    HOST,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RouterFactory,
    free_port,
    router_data,
    wait_until,
    write_toml,
)
from tests.sentinels import MASTER_NAME, SentinelSetup


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    setup = SentinelSetup()
    try:
        yield setup
    finally:
        setup.cleanup()


def sentinel_data(
    gateways: dict[str, Gateway], sentinels: list[str], **router: Any
) -> dict[str, Any]:
    data = router_data("unused", gateways, **router)
    del data["router"]["redis_url"]
    data["router"]["redis_sentinels"] = sentinels
    data["router"]["redis_master"] = MASTER_NAME
    return data


def test_config_keys() -> None:
    systems = {"a": {"gateway": "http://gw:1", "public_url": "https://a.example.com"}}
    config = build_config(
        {
            "router": {
                "redis_sentinels": ["s1:26379", "[::1]:26380"],
                "redis_master": "prod",
                "redis_password": "node-secret",
                "redis_sentinel_password": "sentinel-secret",
            },
            "systems": systems,
        },
        {},
    )
    target = redis_target(config.router)
    assert isinstance(target, SentinelTarget)
    assert target.sentinels == (("s1", 26379), ("::1", 26380))
    assert target.description == "sentinel://s1:26379,::1:26380/prod"
    for shown in (target.description, repr(config), repr(target)):
        assert "node-secret" not in shown and "sentinel-secret" not in shown
    with pytest.raises(ConfigError, match=r"^router\.redis_sentinels: set either redis_url"):
        build_config(
            {
                "router": {"redis_url": "redis://r:6379/0", "redis_sentinels": ["s1:26379"]},
                "systems": systems,
            },
            {},
        )
    with pytest.raises(ConfigError, match=r"^router\.redis_sentinels: set either"):
        build_config(
            {"router": {"redis_sentinels": ["s1:26379"]}, "systems": systems},
            {"TOKENROUTER_REDIS_URL": "redis://r:6379/0"},
        )
    with pytest.raises(ConfigError, match=r"^router\.redis_sentinels: 's1' is not host:port"):
        build_config({"router": {"redis_sentinels": ["s1"]}, "systems": systems}, {})


def test_serve_refuses_sentinels_that_do_not_know_the_master(
    tmp_path: Path, sentinel_setup: SentinelSetup, gateways: dict[str, Gateway]
) -> None:
    data = sentinel_data(gateways, sentinel_setup.addresses)
    data["router"]["redis_master"] = "nosuchmaster"
    path = write_toml(tmp_path / "router.toml", data)
    line = one_line_error(run("serve", "--config", str(path)))
    assert line.startswith(
        "token-router: error: router.redis_master: no master named 'nosuchmaster'"
    )


def test_cli_with_both_keys_names_the_key(tmp_path: Path, gateways: dict[str, Gateway]) -> None:
    data = sentinel_data(gateways, ["127.0.0.1:1"])
    data["router"]["redis_url"] = "redis://127.0.0.1:1/0"
    path = write_toml(tmp_path / "router.toml", data)
    line = one_line_error(run("status", "--config", str(path)))
    assert line.startswith("token-router: error: router.redis_sentinels: set either redis_url")


async def test_failover_under_token_load(
    tmp_path: Path,
    sentinel_setup: SentinelSetup,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    await wait_until(lambda: asyncio.to_thread(sentinel_setup.ready), timeout=30, interval=0.2)
    data = sentinel_data(gateways, sentinel_setup.addresses)
    router = await routers(build_config(data, {}))
    assert router.active == "a"
    store = router.server.runtime.store
    assert store.description.startswith("sentinel://")

    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def load() -> None:
        # Steady token load: a few concurrent clients, each one request after another.
        while not stop.is_set():
            try:
                async with http.post(
                    router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)
                ) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except aiohttp.ClientError:
                statuses[0] += 1
            await asyncio.sleep(0.005)

    clients = [asyncio.create_task(load()) for _ in range(4)]
    try:
        await wait_until(lambda: sum(statuses.values()) > 50, timeout=10)
        old_port = sentinel_setup.master.port
        killed = time.monotonic()
        sentinel_setup.master.stop()  # SIGKILL: the master is gone

        def promoted() -> bool:
            return sentinel_setup.master_port() == sentinel_setup.replica.port

        await wait_until(lambda: asyncio.to_thread(promoted), timeout=30, interval=0.05)
        failover = time.monotonic() - killed
        assert sentinel_setup.master_port() != old_port

        # A switch written to the new master is followed within 1 s.
        new_master = redis.Redis(HOST, sentinel_setup.replica.port, decode_responses=True)
        written = time.monotonic()
        new_master.set("tokenrouter:active", "b")
        await wait_until(lambda: router.active == "b", timeout=1.0, interval=0.005)
        followed = time.monotonic() - written
        # The watcher re-subscribed there and turned keyspace notifications on again.
        await wait_until(
            lambda: "K" in str(new_master.config_get("notify-keyspace-events")), timeout=5
        )
        new_master.close()
        during = sum(statuses.values())
        await wait_until(lambda: sum(statuses.values()) > during + 50, timeout=10)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    print(
        f"\nsentinel failover: {sum(statuses.values())} token requests, failed "
        f"{sum(n for s, n in statuses.items() if s != 200)}; promotion {failover:.2f} s after "
        f"the kill; switch on the new master followed in {followed * 1000:.0f} ms"
    )
    assert set(statuses) == {200}, statuses
    # The CLI finds the new master through the sentinels too (once they all see it up).
    await wait_until(
        lambda: asyncio.to_thread(sentinel_setup.master_healthy), timeout=30, interval=0.1
    )
    path = write_toml(tmp_path / "router.toml", data)
    done = await asyncio.to_thread(run, "status", "--json", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["active"] == "b"
    # Affinity written while the master was away was kept and replayed on the new master.
    await router.server.runtime.affinity.flush()
    await wait_until(lambda: not router.server.runtime.affinity.pending, timeout=10)


async def test_unreachable_sentinels_start_fail_static_and_never_show_a_password(
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = sentinel_data(gateways, [f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"])
    data["router"]["redis_password"] = "node-pw-4567"
    data["router"]["redis_sentinel_password"] = "sentinel-pw-1234"
    config = build_config(data, {})
    with caplog.at_level(logging.DEBUG):
        # serve's pre-flight: nobody answers, so it starts (fail-static), saying why.
        await asyncio.to_thread(preflight_sentinels, config)
        router = await routers(config)
        assert router.active == "a"
        async with http.get(
            router.admin_url + "/api/status", headers={"Authorization": "Bearer test-admin-token"}
        ) as resp:
            body = await resp.text()
    assert "no sentinel of router.redis_sentinels answered" in caplog.text
    # One readable line, not redis-py's repr of every sentinel client.
    assert "No master found for 'mymaster' (sentinels unreachable" in caplog.text
    assert "redis.asyncio.client.Redis" not in caplog.text
    assert "sentinel://" in body
    for secret in ("node-pw-4567", "sentinel-pw-1234"):
        assert secret not in body
        assert secret not in caplog.text
