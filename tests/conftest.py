"""Fixtures shared by every test module: a real redis-server per test, simulated systems,
routers on real sockets. A module that needs other router settings overrides
`router_options` (tests/proxy/test_handler.py does)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import uvloop

from tests.helpers import (
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    start_gateway,
)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked `uvloop` run on the event loop the router runs on in production."""
    if item.get_closest_marker("uvloop"):
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def gateways() -> AsyncIterator[dict[str, Gateway]]:
    started = {"a": await start_gateway("a", "1.0"), "b": await start_gateway("b", "2.0")}
    try:
        yield started
    finally:
        for gateway in started.values():
            await gateway.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """One simulated system alone, for tests of the parts that talk to a single gateway."""
    started = await start_gateway("a", "1.0")
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def routers() -> AsyncIterator[RouterFactory]:
    factory = RouterFactory()
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def router_options() -> dict[str, Any]:
    """Extra `[router]` settings for the `router` and `pair` fixtures (override per module)."""
    return {}


@pytest.fixture
async def router(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    router_options: dict[str, Any],
) -> RunningRouter:
    """One router in front of systems a (active) and b, following the test's Redis."""
    return await routers(make_config(redis_server.url, gateways, **router_options))


@pytest.fixture
async def pair(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    router_options: dict[str, Any],
) -> tuple[RunningRouter, RunningRouter]:
    """Two router instances sharing one Redis, as behind a balancer."""
    config = make_config(redis_server.url, gateways, **router_options)
    return await routers(config), await routers(config)
