"""The per-worker budget of gateway answer bytes held at once (router.answer_budget, issue
25 item 2): past it a clear 503, never unbounded growth; what an answer holds comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from router.config import build_config
from router.errors import ConfigError
from tests.helpers import (
    Gateway,
    RedisServer,
    RouterFactory,
    make_config,
    router_data,
    wait_until,
)
from tests.hostile import HostileGateway

LIBRARY = "/gateway/adapter.js"


@pytest.fixture
async def hostile() -> AsyncIterator[HostileGateway]:
    gateway = await HostileGateway().start()
    try:
        yield gateway
    finally:
        gateway.go.set()
        await gateway.stop()


async def test_answers_past_the_budget_are_503_and_the_budget_comes_back(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    hostile: HostileGateway,
    http: aiohttp.ClientSession,
) -> None:
    data = router_data(
        redis_server.url, gateways, max_response_size=600_000, answer_budget=1_000_000
    )
    data["systems"]["a"]["gateway"] = hostile.url
    running = await routers(build_config(data, {}))
    budget = running.server.runtime.answer_budget
    hostile.mode, hostile.size = "hold", 600_000

    async def fetch() -> tuple[int, bytes]:
        async with http.get(running.proxy_url + LIBRARY) as resp:
            return resp.status, await resp.read()

    first = asyncio.create_task(fetch())
    # Its declared length is taken as soon as its head arrives, before the body.
    await wait_until(lambda: budget.held == 600_000)
    async with asyncio.timeout(20):
        async with http.get(running.proxy_url + LIBRARY) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "2"
            doc = await resp.json()
    assert doc["error"] == "overloaded" and doc["system"] == "a"
    assert "router.answer_budget" in doc["message"]
    assert budget.held == 600_000  # the refused answer gave back what it had not got
    hostile.go.set()
    async with asyncio.timeout(20):
        status, body = await first
    assert status == 200 and len(body) == 600_000
    await wait_until(lambda: budget.held == 0)
    async with asyncio.timeout(20):
        assert (await fetch())[0] == 200
    await wait_until(lambda: budget.held == 0)
    assert budget.peak == 600_000 and budget.refused == 1


async def test_small_answers_give_their_bytes_back(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    running = await routers(make_config(redis_server.url, gateways))
    budget = running.server.runtime.answer_budget
    assert budget.limit == 64 * 1024 * 1024  # the default
    for _ in range(20):
        async with http.get(running.proxy_url + LIBRARY) as resp:
            assert resp.status == 200
            await resp.read()
    assert budget.held == 0 and budget.peak > 0


def test_a_budget_below_the_largest_answer_is_refused(
    redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(redis_server.url, gateways, max_response_size=2_000, answer_budget=1_000)
    assert caught.value.key == "router.answer_budget"
