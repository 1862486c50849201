"""Take docs/admin.png: the admin page of a real router, with the test suite's own tooling.

    python docs/screenshot.py [--out docs/admin.png]

Starts what the browser tests start (a redis-server, two simulated systems, the router on
loopback), makes a little traffic and history (sessions on A, a switch to B, a bare
`redis-cli SET` back to A, steady token requests), then has Debian's Chromium log in and
photograph the page. Nothing is downloaded; everything binds 127.0.0.1 and is stopped after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]


async def traffic(proxy_url: str, stop: asyncio.Event, per_second: float = 20.0) -> None:
    """Steady token requests, so the page shows a rate."""
    import aiohttp

    from tests.helpers import SESSION_BODY, SESSION_PATH

    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            async with http.post(proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
                await resp.read()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / per_second)


async def main(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import aiohttp
    from playwright.async_api import async_playwright, expect

    from router.config import build_config
    from tests.helpers import (
        SESSION_BODY,
        SESSION_PATH,
        RedisServer,
        RouterFactory,
        router_data,
        start_gateway,
        wait_until,
    )

    redis = RedisServer()
    redis.start()
    gateways = {"a": await start_gateway("a", "1.0"), "b": await start_gateway("b", "2.0")}
    routers = RouterFactory()
    stop = asyncio.Event()
    try:
        data = router_data(redis.url, gateways)
        data["systems"]["b"]["stats_url"] = gateways["b"].url + "/stats"
        data["router"].pop("release_paths", None)  # the tests turn releases off; show them
        router = await routers(build_config(data, {}))
        token = data["router"]["admin_token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            for _ in range(4):  # sessions that stay open on A after the switch
                async with http.post(router.proxy_url + SESSION_PATH, json=SESSION_BODY) as r:
                    await r.read()
            # A history to show: API and page switches, and a bare SET (via "").
            history = (("b", "api"), ("a", "api"), ("b", "page"), ("a", ""), ("b", "page"))
            for system, via in history:
                if not via:
                    redis.command("SET", "tokenrouter:active", system)  # what redis-cli does
                    await wait_until(lambda: router.active == "a")
                    continue
                async with http.post(
                    router.admin_url + "/api/switch",
                    json={"system": system, "via": via},
                    headers=auth,
                ) as r:
                    assert r.status == 200, await r.text()
        pump = asyncio.create_task(traffic(router.proxy_url, stop))

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 940})
            await page.goto(router.admin_url + "/login")
            await page.fill("#token", token)
            await page.click("button[type=submit]")
            await expect(page.locator("#feed")).to_have_attribute("data-state", "live")
            b = page.locator('.card[data-system="b"]')
            await expect(b.locator('[data-field="health"]')).to_contain_text("healthy")
            # Let the rate window and the trend fill a little: the picture is the point here.
            await expect(b.locator('[data-field="rate"]')).not_to_have_text("0.0", timeout=15000)
            await asyncio.sleep(6)
            await page.screenshot(path=str(out), full_page=True)
            await browser.close()
        stop.set()
        await pump
    finally:
        stop.set()
        await routers.close()
        for gateway in gateways.values():
            await gateway.stop()
        redis.cleanup()
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "admin.png")
    asyncio.run(main(parser.parse_args().out))
