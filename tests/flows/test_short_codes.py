"""Short codes two systems drew alike: the router never hands out a code it still routes to
another system, and a look-up never reaches the wrong system's session (issue 25, item 3).

Each system draws its 7-digit codes on its own, so they meet. The simulated system b is
made to draw the code a already issued (GatewayState.new_short_code, per system), on real
sockets through real routers and Redis.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from router.proxy.handler import CODE_TRIES
from tests.helpers import (
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    new_code,
    switch_to,
)

CREATE = "/assistserver/shortcode/create"
CONSUMER = "/assistserver/shortcode/consumer"


def draw_first(gateway: Gateway, codes: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `gateway` issue `codes` (in order) before drawing at random again."""
    state = gateway.state
    cls = type(state)
    original: Callable[..., str] = cls.new_short_code

    def rigged(self: object) -> str:
        if self is state and codes:
            code = codes.pop(0)
            # The system's own record of it, as new_short_code makes one.
            entry = original(self)
            state.short_codes[code] = state.short_codes.pop(entry)
            return code
        return original(self)

    monkeypatch.setattr(cls, "new_short_code", rigged)


async def consumer(
    http: aiohttp.ClientSession, router: RunningRouter, code: str
) -> tuple[int, str]:
    async with http.get(router.proxy_url + CONSUMER, params={"appkey": code}) as resp:
        doc = await resp.json()
        return resp.status, resp.headers.get("X-Token-Router-System", "") + ":" + str(
            doc.get("session-token", "")
        )


async def test_code_another_system_holds_is_never_handed_out(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config(redis_server.url, gateways)
    r1, r2 = await routers(config), await routers(config)
    code = await new_code(http, r1)  # issued by a
    status, owner = await consumer(http, r2, code)
    assert status == 200 and owner.startswith("a:a-"), owner
    await switch_to(redis_server, [r1, r2], "b")
    draw_first(gateways["b"], [code], monkeypatch)
    other = await new_code(http, r2)  # b drew a's code first: the router asked again
    assert other != code
    assert gateways["b"].state.requests["shortcode_create"] == 2
    # a's code still reaches a's session from either instance, and b's reaches b.
    for router in (r1, r2):
        status, owner = await consumer(http, router, code)
        assert status == 200 and owner.startswith("a:a-"), owner
        status, owner = await consumer(http, router, other)
        assert status == 200 and owner.startswith("b:b-"), owner
    assert redis_server.command("GET", f"tokenrouter:aff:code:{code}").endswith("\na")


async def test_a_system_that_keeps_colliding_gets_a_clear_error(
    router: RunningRouter,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = await new_code(http, router)
    await switch_to(redis_server, [router], "b")
    draw_first(gateways["b"], [code] * (CODE_TRIES + 1), monkeypatch)
    async with http.put(router.proxy_url + CREATE) as resp:
        assert resp.status == 502
        doc = await resp.json()
    assert doc["error"] == "short_code_collision"
    assert doc["system"] == "b"
    assert "still routes to a" in doc["message"]
    assert gateways["b"].state.requests["shortcode_create"] == CODE_TRIES
    status, owner = await consumer(http, router, code)
    assert status == 200 and owner.startswith("a:a-"), owner
