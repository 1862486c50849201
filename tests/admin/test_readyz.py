"""/readyz answers anyone: while Redis is down it says so without naming where Redis is
(issue 25, item 11); the details stay in the log and behind the admin credential."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.helpers import ADMIN_AUTH, Gateway, RedisServer, RouterFactory, make_config, wait_until


@pytest.mark.parametrize("started", [True, False], ids=["degraded", "starting"])
async def test_readyz_does_not_name_redis_while_it_is_down(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    started: bool,
) -> None:
    caplog.set_level(logging.WARNING)
    # The default user has no password: any password is accepted, the user is in the URL.
    url = f"redis://default:anything@127.0.0.1:{redis_server.port}/0"
    if not started:
        redis_server.stop()
    running = await routers(make_config(url, gateways, redis_retry_max=0.2))
    holder = running.server.runtime.holder
    if started:
        redis_server.stop()
    await wait_until(lambda: holder.degraded, timeout=10)
    async with http.get(running.admin_url + "/readyz") as resp:
        text = await resp.text()
        doc = await resp.json()
    assert doc["status"] == ("degraded" if started else "starting")
    assert doc["error"] == "redis unreachable"
    for secret in ("default", "anything", "127.0.0.1", str(redis_server.port)):
        assert secret not in text
    # The details are for the operator: in the log, and in the authenticated status.
    assert str(redis_server.port) in caplog.text
    async with http.get(running.admin_url + "/api/status", headers=ADMIN_AUTH) as resp:
        assert str(redis_server.port) in (await resp.json())["store"]["url"]
