"""Fixtures: a real redis-server per test, two simulated systems, routers on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.helpers import Gateway, RedisServer, RouterFactory, start_gateway


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
