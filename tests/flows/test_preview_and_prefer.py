"""Choosing another system per request: the preview secret and the prefer header."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.helpers import (
    ADMIN_AUTH,
    SESSION_BODY,
    SESSION_PATH,
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
    return {"preview_secret": "s3cret-preview-0123"}


async def test_preview_with_right_and_wrong_secret(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, r2 = pair
    _, system = await new_token(http, r1, {"X-Token-Router-Preview": "b:s3cret-preview-0123"})
    assert system == "b"
    # A credential that does not check out is refused, never answered by the active system:
    # a test web app must not pass while testing the old system.
    for value, why in (
        ("b:wrong", "wrong secret in X-Token-Router-Preview"),
        ("b", "wrong secret in X-Token-Router-Preview"),
        (
            "zz:s3cret-preview-0123",
            "X-Token-Router-Preview names unknown system 'zz'; configured systems: a, b",
        ),
    ):
        async with http.post(
            r1.proxy_url + SESSION_PATH,
            data=orjson.dumps(SESSION_BODY),
            headers={"X-Token-Router-Preview": value},
        ) as resp:
            assert resp.status == 403, value
            assert "X-Token-Router-System" not in resp.headers
            doc = await resp.json()
        assert doc["error"] == "preview_refused"
        assert doc["message"].startswith(why), doc
        assert doc["message"].endswith("refused, not answered by the active system")
        assert "s3cret-preview-0123" not in doc["message"]

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
    # b holds the preferred token: offline only with force (gate open)
    async with http.post(
        r1.admin_url + "/api/systems/b/offline", json={"force": True}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200
    await wait_until(lambda: r1.server.runtime.holder.current.is_offline("b"))
    _, system = await new_token(http, r1, {"X-Token-Router-Prefer": "b"})
    assert system == "a"
