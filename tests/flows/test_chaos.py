"""Chaos drills, bounded in count and time: switching, Redis and router restarts under load.

Each drill keeps a steady load of token requests running while something breaks, and then
requires zero failed requests.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.balancer import Backend, Balancer
from tests.helpers import (
    HOST,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RouterProcess,
    free_port,
    make_config,
    router_data,
    wait_ready,
    wait_until,
    write_toml,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


@dataclass
class Load:
    """`clients` loops posting session requests to `urls` in turn until stopped."""

    urls: list[str]
    clients: int = 12
    # (sent, answered, status, system), times from time.monotonic()
    results: list[tuple[float, float, int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _client(self, number: int, http: aiohttp.ClientSession) -> None:
        i = number
        while not self._stop.is_set():
            url = self.urls[i % len(self.urls)]
            i += 1
            sent = time.monotonic()
            try:
                async with http.post(url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
                    await r.read()
                    self.results.append(
                        (
                            sent,
                            time.monotonic(),
                            r.status,
                            r.headers.get("X-Token-Router-System", ""),
                        )
                    )
            except aiohttp.ClientError as exc:
                self.errors.append(repr(exc))

    async def __aenter__(self) -> Load:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._tasks = [asyncio.create_task(self._client(n, self.http)) for n in range(self.clients)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.http.close()

    def failed(self) -> list[tuple[float, float, int, str]]:
        return [r for r in self.results if r[2] != 200]


async def keep_going(load: Load, more: int) -> None:
    """Wait until `more` further requests completed: the drill happened under load."""
    target = len(load.results) + more
    await wait_until(lambda: len(load.results) >= target, timeout=30)


async def test_switch_back_and_forth_20_times_under_load(
    redis_server: RedisServer, gateways: dict[str, Gateway], routers: RouterFactory
) -> None:
    config = make_config(redis_server.url, gateways)
    instances = [await routers(config) for _ in range(2)]
    windows: list[tuple[float, float, str]] = []  # (propagated, next switch, system)
    async with Load([r.proxy_url for r in instances]) as load:
        await keep_going(load, 50)
        for k in range(20):
            to = "b" if k % 2 == 0 else "a"
            switched = time.monotonic()
            if windows:
                windows[-1] = (windows[-1][0], switched, windows[-1][2])
            redis_server.command("SET", "tokenrouter:active", to)
            await wait_until(lambda to=to: all(r.active == to for r in instances))  # type: ignore[misc]
            windows.append((time.monotonic(), float("inf"), to))
            await keep_going(load, 20)
    assert load.errors == []
    assert load.failed() == []
    assert len(load.results) > 400
    # Every request sent after every instance had followed a switch, and answered before the
    # next switch was written, went to the new system: no new session on the old one after
    # propagation. (A request sent before the next SET but routed after the instances applied
    # it may rightly go to the next system: its window ends when it was answered.)
    judged = [
        (sent, system, to)
        for sent, answered, _, system in load.results
        for start, end, to in windows
        if start <= sent and answered < end
    ]
    assert len(judged) > 100  # at least 8 per window: 20 answered per window, 12 in flight
    assert [(sent, system, to) for sent, system, to in judged if system != to] == []


async def test_redis_killed_and_restarted_under_load(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
) -> None:
    config = make_config(redis_server.url, gateways, redis_retry_max=0.2)
    instances = [await routers(config) for _ in range(2)]
    async with Load([r.proxy_url for r in instances]) as load:
        await keep_going(load, 100)
        for _ in range(2):
            redis_server.stop()
            await wait_until(
                lambda: all(r.server.runtime.holder.degraded for r in instances), timeout=10
            )
            await keep_going(load, 100)
            redis_server.start()
            await wait_until(
                lambda: not any(r.server.runtime.holder.degraded for r in instances), timeout=10
            )
            await keep_going(load, 100)
    assert load.errors == []
    assert load.failed() == []

    # Affinity learned while Redis was away was replayed: every token is known in Redis.
    async def replayed() -> bool:
        return all(not r.server.runtime.affinity.pending for r in instances)

    await wait_until(replayed, timeout=10)


async def test_rolling_restart_of_two_routers_behind_a_balancer(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    processes: list[RouterProcess] = []
    backends: list[Backend] = []
    for n in range(2):
        proxy, admin = free_port(), free_port()
        data = router_data(
            redis_server.url,
            gateways,
            listen=f"{HOST}:{proxy}",
            admin_listen=f"{HOST}:{admin}",
            stop_delay=0.5,
            shutdown_timeout=10,
        )
        path = write_toml(tmp_path / f"router{n}.toml", data)
        processes.append(RouterProcess(path))
        backends.append(Backend(f"http://{HOST}:{proxy}", f"http://{HOST}:{admin}"))
    balancer = Balancer(backends)
    try:
        for process, backend in zip(processes, backends, strict=True):
            process.start()
            await wait_ready(backend.admin_url)
        url = await balancer.start()
        async with Load([url], clients=8) as load:
            await keep_going(load, 100)
            for process, backend in zip(processes, backends, strict=True):
                process.signal(signal.SIGTERM)
                assert await asyncio.to_thread(process.wait, 20) == 0
                await keep_going(load, 50)  # served by the other instance alone
                process.start()
                await wait_ready(backend.admin_url)
                await wait_until(lambda backend=backend: backend.healthy, timeout=20)  # type: ignore[misc]
                await keep_going(load, 100)
        assert balancer.failures == []
        assert load.errors == []
        assert load.failed() == []
    finally:
        await balancer.stop()
        for process in processes:
            process.kill()
