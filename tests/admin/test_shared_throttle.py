"""The credential throttle is one bucket per address for the whole fleet, through Redis, its
rates and exemption configurable, and per process while Redis is away (issue 25, item 15).
Two router instances on one real Redis."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from router.admin.app_keys import AUTH
from tests.helpers import (
    ADMIN_AUTH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    wait_until,
)

WRONG = {"Authorization": "Bearer wrong-token-0123456789"}


async def status(http: aiohttp.ClientSession, router: RunningRouter, headers: Any) -> int:
    async with http.get(router.admin_url + "/api/status", headers=headers) as resp:
        return resp.status


@pytest.fixture
def router_options() -> dict[str, Any]:
    return {"throttle_per_address": 3, "throttle_per_address_per_minute": 0.5}


async def test_one_bucket_per_address_for_the_whole_fleet(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, r2 = pair
    # Three failures allowed per address (configured), spread over two instances.
    assert await status(http, r1, WRONG) == 401
    assert await status(http, r2, WRONG) == 401
    assert await status(http, r1, WRONG) == 401
    for router in (r2, r1):
        assert await status(http, router, WRONG) == 429
        assert await status(http, router, ADMIN_AUTH) == 429  # not even checked


async def test_falls_back_to_per_process_while_redis_is_away(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways, throttle_per_address=2, redis_retry_max=0.2)
    r1, r2 = await routers(config), await routers(config)
    redis_server.stop()
    await wait_until(lambda: r1.server.runtime.holder.degraded, timeout=10)
    assert await status(http, r1, WRONG) == 401
    assert await status(http, r1, WRONG) == 401
    assert await status(http, r1, WRONG) == 429  # this process's own buckets
    assert await status(http, r2, ADMIN_AUTH) == 200  # the other process has its own


async def test_exemption_window_is_configurable(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """With the exemption off, an operator who logged in is not spared the overall bucket."""
    for exempt, expected in ((28_800.0, 200), (0.0, 429)):
        redis_server.command("FLUSHALL")
        config = make_config(
            redis_server.url,
            gateways,
            throttle_overall=1,
            throttle_overall_per_minute=0.5,
            throttle_exempt_after_login=exempt,
        )
        router = await routers(config)
        assert await status(http, router, ADMIN_AUTH) == 200  # a valid credential first
        # Someone else's spray empties the overall bucket: a failure from another address,
        # spent through the same shared throttle (a second client address is not routable
        # on every test machine).
        await router.server.admin_runner.app[AUTH].throttle.failed("192.0.2.66")
        assert await status(http, router, ADMIN_AUTH) == expected, exempt
