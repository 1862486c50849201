"""Choosing another system per request: the preview secret and the prefer header."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    ADMIN_AUTH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    new_token,
    states_of,
    wait_until,
)


@pytest.fixture
def router_options() -> dict[str, Any]:
    return {"preview_secret": "s3cret"}


async def test_preview_with_right_and_wrong_secret(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, r2 = pair
    _, system = await new_token(http, r1, {"X-Token-Router-Preview": "b:s3cret"})
    assert system == "b"
    _, system = await new_token(http, r1, {"X-Token-Router-Preview": "b:wrong"})
    assert system == "a"
    _, system = await new_token(http, r1, {"X-Token-Router-Preview": "b"})
    assert system == "a"

    async def previewing() -> bool:
        return bool((await states_of(http, r2))["b"][0] == "preview")

    await wait_until(previewing)


async def test_prefer_header_and_policy(
    pair: tuple[RunningRouter, RunningRouter],
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    r1, _ = pair
    _, system = await new_token(http, r1, {"X-Token-Router-Prefer": "b"})
    assert system == "b"
    _, system = await new_token(http, r1, {"X-Token-Router-Prefer": "zz"})
    assert system == "a"
    never = await routers(make_config(redis_server.url, gateways, prefer_policy="never"))
    _, system = await new_token(http, never, {"X-Token-Router-Prefer": "b"})
    assert system == "a"
    async with http.post(r1.admin_url + "/api/systems/b/offline", headers=ADMIN_AUTH) as resp:
        assert resp.status == 200
    await wait_until(lambda: r1.server.runtime.holder.current.is_offline("b"))
    _, system = await new_token(http, r1, {"X-Token-Router-Prefer": "b"})
    assert system == "a"
