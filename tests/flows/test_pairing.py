"""Live Assist pairing: an agent request naming a short code or a cid reaches the system
that owns it, from any instance, after a switch."""

from __future__ import annotations

import aiohttp

from tests.helpers import Gateway, RedisServer, RouterFactory, make_config, wait_until


async def test_agent_pairing_after_switch_from_another_instance(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways)
    r1, r2 = await routers(config), await routers(config)
    async with http.put(r1.proxy_url + "/assistserver/shortcode/create") as resp:
        code = (await resp.json())["shortCode"]
    async with http.get(
        r1.proxy_url + "/assistserver/shortcode/consumer", params={"appkey": code}
    ) as resp:
        cid = (await resp.json())["cid"]  # learned by r1 from the look-up answer
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: r1.active == "b" and r2.active == "b")
    await r1.server.runtime.affinity.flush()
    agent = r2.proxy_url + "/assistserver/agent"

    async def system_of(resp: aiohttp.ClientResponse) -> str:
        assert resp.status == 200, await resp.text()
        return resp.headers["X-Token-Router-System"]

    async with http.post(agent, params={"appkey": code}, data={"username": "ag"}) as resp:
        assert await system_of(resp) == "a"
    async with http.post(agent, data={"appkey": code, "username": "ag"}) as resp:
        assert await system_of(resp) == "a"
        assert (await resp.json())["form"] == {"appkey": code, "username": "ag"}  # intact
    async with http.post(agent, data={"cid": cid}) as resp:
        assert await system_of(resp) == "a"
    async with http.post(agent, params={"cid": cid}) as resp:
        assert await system_of(resp) == "a"
    # Naming nothing known: a new pairing, on the active system.
    async with http.post(agent, data={"username": "ag"}) as resp:
        assert await system_of(resp) == "b"
    async with http.post(agent, data={"appkey": "0000000"}) as resp:
        assert await system_of(resp) == "b"
    # The consumer route is not paired (it creates the consumer's own session).
    async with http.post(r2.proxy_url + "/assistserver/consumer", data={"cid": cid}) as resp:
        assert await system_of(resp) == "b"
