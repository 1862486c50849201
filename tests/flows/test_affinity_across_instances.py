"""Affinity across switches and instances: what one instance issued, another routes home."""

from __future__ import annotations

import aiohttp
import orjson

from tests.helpers import (
    SESSION_BODY,
    Gateway,
    RedisServer,
    RunningRouter,
    issued_everywhere,
    new_code,
    new_token,
    switch_to,
)


async def test_token_delete_reaches_issuer_after_switch_from_another_instance(
    pair: tuple[RunningRouter, RunningRouter],
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
) -> None:
    r1, r2 = pair
    sid, system = await new_token(http, r1)
    assert system == "a"
    await issued_everywhere(r1)
    await switch_to(redis_server, pair, "b")
    async with http.delete(r2.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 204
        assert resp.headers["X-Token-Router-System"] == "a"
    assert sid not in gateways["a"].state.sessions
    # An id nobody issued goes to the active system (which does not know it either).
    async with http.delete(r2.proxy_url + "/gateway/sessions/session/id/nobody") as resp:
        assert resp.status == 404
        assert resp.headers["X-Token-Router-System"] == "b"


async def test_short_codes_resolve_on_their_system_after_switch(
    pair: tuple[RunningRouter, RunningRouter],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    r1, r2 = pair
    code = await new_code(http, r1)
    await issued_everywhere(r1)
    await switch_to(redis_server, pair, "b")
    for kind in ("consumer", "agent"):
        async with http.get(
            r2.proxy_url + f"/assistserver/shortcode/{kind}", params={"appkey": code}
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Token-Router-System"] == "a"
            assert "cid" in await resp.json()
    # New codes now come from b; an unknown code goes to b, which answers 403.
    code_b = await new_code(http, r2)
    async with http.get(
        r1.proxy_url + "/assistserver/shortcode/consumer", params={"appkey": code_b}
    ) as resp:
        assert resp.headers["X-Token-Router-System"] == "b"
        assert resp.status == 200
    async with http.get(
        r1.proxy_url + "/assistserver/shortcode/consumer", params={"appkey": "0000000"}
    ) as resp:
        assert resp.status == 403
        assert resp.headers["X-Token-Router-System"] == "b"


async def test_follow_ups_whose_issuer_is_not_known_yet_find_it(
    pair: tuple[RunningRouter, RunningRouter],
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
) -> None:
    """Right after Redis returns, a record made while it was away may not be replayed yet,
    and during a rollout the issuer may be the idle system: a "not mine" answer from the
    active system sends the follow-up on to the others (routing.fallbacks)."""
    _, r2 = pair
    # Issued at b behind the routers' back: no instance knows its owner.
    async with http.post(
        gateways["b"].url + "/gateway/sessions/session", data=orjson.dumps(SESSION_BODY)
    ) as resp:
        assert resp.status == 200
        sid = (await resp.json())["sessionid"]
    async with http.put(gateways["b"].url + "/assistserver/shortcode/create") as resp:
        code = (await resp.json())["shortCode"]
    async with http.get(r2.proxy_url + f"/assistserver/shortcode/consumer?appkey={code}") as resp:
        assert resp.status == 200
        assert resp.headers["X-Token-Router-System"] == "b"
    async with http.delete(r2.proxy_url + f"/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 204
        assert resp.headers["X-Token-Router-System"] == "b"
    assert sid not in gateways["b"].state.sessions
