"""`token-router serve` as a real process: SIGTERM with requests in flight, --workers."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.helpers import (
    HOST,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterProcess,
    free_port,
    router_data,
    wait_ready,
    write_toml,
)


def config_file(
    tmp_path: Path, redis_url: str, gateways: dict[str, Gateway], **kw: object
) -> tuple[Path, str, str]:
    port, admin = free_port(), free_port()
    listen = {"listen": f"{HOST}:{port}", "admin_listen": f"{HOST}:{admin}", **kw}
    data = router_data(redis_url, gateways, **listen)
    return (
        write_toml(tmp_path / "router.toml", data),
        f"http://{HOST}:{port}",
        f"http://{HOST}:{admin}",
    )


async def test_sigterm_finishes_requests_in_flight_then_exits_0(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
) -> None:
    path, proxy, admin = config_file(tmp_path, redis_server.url, gateways, shutdown_timeout=10)
    router = RouterProcess(path)
    router.start()
    try:
        await wait_ready(admin)
        gateways["a"].state.delay = 1.0

        async def token() -> int:
            async with http.post(proxy + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
                await r.read()
                return r.status

        in_flight = [asyncio.create_task(token()) for _ in range(10)]
        await asyncio.sleep(0.4)  # all ten are waiting on the slow gateway now
        router.signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        # Stopped accepting: a new connection is refused while the ten finish.
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh, fresh.get(proxy + "/router/current") as r:
                await r.read()
        assert await asyncio.gather(*in_flight) == [200] * 10
        assert await asyncio.to_thread(router.wait, 15) == 0
        assert "stopping: no new connections" in router.output()
    finally:
        router.kill()


async def test_workers_share_the_port_and_stop_together(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
) -> None:
    path, proxy, admin = config_file(tmp_path, redis_server.url, gateways)
    router = RouterProcess(path, workers=2)
    router.start()
    try:
        await wait_ready(admin)
        instances = set()
        for _ in range(40):
            # A new connection each time, so the kernel spreads them over the workers.
            async with aiohttp.ClientSession() as fresh:
                async with fresh.get(admin + "/api/status") as resp:
                    instances.add((await resp.json())["instance"])
                async with fresh.post(proxy + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
                    assert r.status == 200
        assert len(instances) == 2
        redis_server.command("SET", "tokenrouter:active", "b")
        await asyncio.sleep(0.3)
        for _ in range(10):
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.post(proxy + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r,
            ):
                assert r.headers["X-Token-Router-System"] == "b"
        router.signal(signal.SIGTERM)
        assert await asyncio.to_thread(router.wait, 20) == 0
    finally:
        router.kill()


async def test_workers_refuse_the_memory_store(
    tmp_path: Path, gateways: dict[str, Gateway]
) -> None:
    path, _, _ = config_file(tmp_path, "memory://", gateways)
    router = RouterProcess(path, workers=2)
    router.start()
    try:
        assert await asyncio.to_thread(router.wait, 20) == 2
        out = router.output().strip()
        assert out.splitlines() == [
            "token-router: error: router.redis_url: memory:// lives inside one process; "
            "--workers above 1 needs Redis"
        ]
    finally:
        router.kill()


async def test_port_in_use_is_a_one_line_error(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    path, _, _ = config_file(
        tmp_path, redis_server.url, gateways, listen=f"{HOST}:{redis_server.port}"
    )
    router = RouterProcess(path)
    router.start()
    try:
        assert await asyncio.to_thread(router.wait, 20) == 2
        last = router.output().strip().splitlines()[-1]
        assert last.startswith("token-router: error: router.listen: cannot listen on it")
        assert "Traceback" not in router.output()
    finally:
        router.kill()


async def test_stop_delay_reports_not_ready_while_still_serving(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
) -> None:
    path, proxy, admin = config_file(tmp_path, redis_server.url, gateways, stop_delay=3)
    router = RouterProcess(path)
    router.start()
    try:
        await wait_ready(admin)
        router.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with http.get(admin + "/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "stopping"
        # Still serving during the delay: the balancer has time to take it out first.
        async with http.post(proxy + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as resp:
            assert resp.status == 200
        assert await asyncio.to_thread(router.wait, 20) == 0
        assert "serving 3.0 s more before closing the listener" in router.output()
    finally:
        router.kill()
