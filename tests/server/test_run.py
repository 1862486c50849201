"""`token-router serve` as a real process: SIGTERM with requests in flight, --workers."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import aiohttp
import orjson

from tests.helpers import (
    ADMIN_AUTH,
    HOST,
    SESSION_BODY,
    SESSION_PATH,
    START_TIMEOUT,
    Gateway,
    RedisServer,
    RouterProcess,
    free_port,
    router_data,
    wait_ready,
    wait_until,
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
    path, proxy, admin = config_file(tmp_path, redis_server.url, gateways, shutdown_timeout=20)
    router = RouterProcess(path)
    router.start()
    try:
        await wait_ready(admin)
        # Long enough that the ten are surely still in flight when the listener has closed,
        # however slowly a loaded machine delivers the signal.
        gateways["a"].state.delay = 4.0

        async def token() -> int:
            async with http.post(proxy + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
                await r.read()
                return r.status

        in_flight = [asyncio.create_task(token()) for _ in range(10)]
        # All ten are waiting on the slow gateway now.
        await wait_until(lambda: gateways["a"].state.requests["session_create"] == 10, timeout=20)
        router.signal(signal.SIGTERM)
        # Stopped accepting: a new connection is refused while the ten finish.
        await wait_until(lambda: connection_refused(proxy), timeout=20, interval=0.05)
        assert not any(task.done() for task in in_flight)
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
        instances: set[str] = set()

        async def both_answer() -> bool:
            # A new connection each time, so the kernel spreads them over the workers. Until
            # both answer, not for a fixed number of tries: /readyz 200 came from the first
            # worker, and on a loaded machine the second one was still starting after 40.
            async with aiohttp.ClientSession() as fresh:
                async with fresh.get(admin + "/api/status", headers=ADMIN_AUTH) as resp:
                    instances.add((await resp.json())["instance"])
                async with fresh.post(proxy + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
                    assert r.status == 200
            return len(instances) == 2

        await wait_until(both_answer, timeout=START_TIMEOUT, interval=0.02)
        redis_server.command("SET", "tokenrouter:active", "b")
        following: set[str] = set()

        async def both_follow() -> bool:
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.get(admin + "/api/status", headers=ADMIN_AUTH) as r,
            ):
                status = await r.json()
            if status["active"] == "b":
                following.add(status["instance"])
            return following == instances

        await wait_until(both_follow, timeout=20, interval=0.02)
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


async def connection_refused(url: str) -> bool:
    """Whether a new connection to `url` is refused (the listener is closed)."""
    try:
        async with aiohttp.ClientSession() as fresh, fresh.get(url + "/router/current") as r:
            await r.read()
    except aiohttp.ClientConnectionError:
        return True
    return False


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
    # Long enough that the checks below surely run inside the delay on a loaded machine.
    path, proxy, admin = config_file(tmp_path, redis_server.url, gateways, stop_delay=6)
    router = RouterProcess(path)
    router.start()
    try:
        await wait_ready(admin)
        router.signal(signal.SIGTERM)

        async def readyz() -> tuple[int, str]:
            async with http.get(admin + "/readyz") as resp:
                return resp.status, (await resp.json())["status"]

        async def not_ready() -> bool:
            return (await readyz())[0] == 503

        await wait_until(not_ready, timeout=20, interval=0.05)
        assert await readyz() == (503, "stopping")
        # Still serving during the delay: the balancer has time to take it out first.
        async with http.post(proxy + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as resp:
            assert resp.status == 200
        assert await asyncio.to_thread(router.wait, 20) == 0
        assert "serving 6.0 s more before closing the listener" in router.output()
    finally:
        router.kill()


async def test_one_off_start_up_work_runs_before_the_listeners_open(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    # serve passes tune_gc (a full GC pass and freeze, ~20 ms of loop) here: no request can
    # be waiting on a listener while it runs.
    from router.config import load_config
    from router.server.run import RouterServer

    path, proxy_url, _ = config_file(tmp_path, redis_server.url, gateways)
    server = RouterServer(load_config(path, {}))
    port = int(proxy_url.rsplit(":", 1)[1])
    seen: list[bool] = []

    def probe() -> None:
        with socket.socket() as sock:
            seen.append(sock.connect_ex((HOST, port)) == 0)

    try:
        await server.start(before_listening=probe)
        with socket.socket() as sock:
            assert sock.connect_ex((HOST, port)) == 0  # open once start returns
    finally:
        await server.stop()
    assert seen == [False]
