"""router/admin/live.py: the drain sampler keeps a drain's history with nobody asking, so the
first `/api/status` or scrape after a switch already knows the rate and the stall."""

from __future__ import annotations

import aiohttp

from router.admin.app_keys import DRAIN
from tests.helpers import (
    ADMIN_AUTH,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    make_config,
    wait_until,
)


async def test_a_drain_is_sampled_with_nobody_asking(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, drain_stall_after=2.0))
    history = router.server.admin_runner.app[DRAIN]
    for _ in range(2):  # calls on a that do not end
        async with http.post(router.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
            assert resp.status == 200
    async with http.post(
        router.admin_url + "/api/switch", json={"system": "b"}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200, await resp.text()
    # No page, no scrape, no API call: the sampler alone, every 2 s while a drains.
    await wait_until(lambda: sum(n == 2 for _, n in history.samples("a")) >= 3, timeout=40)
    async with http.get(router.admin_url + "/api/status", headers=ADMIN_AUTH) as resp:
        a = next(s for s in (await resp.json())["systems"] if s["id"] == "a")
    assert a["badge"] == "draining + stalled"
    assert a["estimate"].startswith("stalled: no fall for")
    async with http.get(router.admin_url + "/metrics") as resp:
        assert 'tokenrouter_drain_stalled{system="a"} 1.0' in await resp.text()
