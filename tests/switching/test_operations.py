"""switching/operations.confirm against a real Redis: who counts as having applied a change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from router.state.keys import Keys
from router.state.redis_store import RedisStore
from router.switching import operations
from tests.helpers import RedisServer, wait_until


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    opened = RedisStore(redis_server.url, Keys("tokenrouter"), keyspace_events=False)
    try:
        yield opened
    finally:
        await opened.close()


def beat(redis_server: RedisServer, ident: str, seen: float, generation: int) -> None:
    """A heartbeat as an instance writes it (the registry is a plain hash)."""
    doc = {"id": ident, "seen": seen, "applied": {"generation": generation}}
    redis_server.command("HSET", "tokenrouter:instances", ident, orjson.dumps(doc).decode())


def reads(redis_server: RedisServer) -> int:
    """HGETALLs Redis has answered: each is one look at the registry."""
    for line in redis_server.command("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_hgetall:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_an_instance_that_stops_cleanly_leaves_the_answer(
    redis_server: RedisServer, store: RedisStore
) -> None:
    beat(redis_server, "done:1", time.time() + 60, 7)
    beat(redis_server, "leaving:1", time.time() + 60, 0)
    before = reads(redis_server)
    task = asyncio.create_task(operations.confirm(store, 7, timeout=30, heartbeat=1.0))
    await wait_until(lambda: reads(redis_server) > before)  # it has seen leaving:1 live
    assert not task.done()  # waiting for leaving:1
    # a clean stop deregisters with a fresh heartbeat: it routes nothing any more
    redis_server.command("HDEL", "tokenrouter:instances", "leaving:1")
    c = await asyncio.wait_for(task, 30)
    assert (c.applied, c.total, c.laggards, c.silent, c.complete) == (1, 1, (), (), True)


async def test_an_instance_that_falls_silent_stays_a_laggard(
    redis_server: RedisServer, store: RedisStore
) -> None:
    beat(redis_server, "done:1", time.time() + 60, 7)
    beat(redis_server, "frozen:1", time.time(), 0)  # stale 3 beats of 0.1 s from now
    c = await operations.confirm(store, 7, timeout=30, heartbeat=0.1)
    assert (c.applied, c.total, c.laggards, c.silent, c.complete) == (
        1,
        2,
        ("frozen:1",),
        ("frozen:1",),
        False,
    )
    assert c.elapsed_ms < 30_000  # nothing left to wait for once only silent ones remain
