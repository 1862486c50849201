"""The page, `token-router status` and `/api/status` at the same moment say the same thing:
during a progressive rollout and during a drain, in Debian's Chromium (screenshots kept in
the test's directory). They all render the one view model (router/systems/view.py); the renderers
fed one history are compared without sockets in tests/flows/test_view_surfaces.py.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from playwright.async_api import Page, expect

from router.config import build_config
from tests.admin.test_page import CHROMIUM, browser, log_in, open_sessions, page
from tests.cli.test_cli import clean_env, run
from tests.helpers import (
    ADMIN_AUTH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    router_data,
    write_toml,
)

__all__ = ["browser", "page"]  # the browser fixtures of test_page.py, shared

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]

SYSTEMS = ("a", "b")


async def api_status(http: aiohttp.ClientSession, router: RunningRouter) -> dict[str, Any]:
    async with http.get(router.admin_url + "/api/status", headers=ADMIN_AUTH) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def shown(page: Page) -> dict[str, Any]:
    """What the page shows: the headline and each card's badge, open count and estimate."""
    doc: dict[str, Any] = await page.evaluate(
        """() => ({
            headline: document.querySelector('#headline').textContent.trim(),
            systems: Object.fromEntries(Array.from(document.querySelectorAll('.card')).map(c => [
                c.dataset.system, {
                    badge: c.querySelector('[data-field=state]').textContent.trim(),
                    open: c.querySelector('[data-field=open]').textContent.trim(),
                    estimate: c.querySelector('[data-field=estimate]').hidden ? '' :
                        c.querySelector('[data-field=estimate]').textContent.trim(),
                }])),
        })"""
    )
    return doc


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["systems"]}


async def cli_status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = await asyncio.to_thread(run, "status", "--config", str(config), *args)
    assert result.returncode == 0, result.stderr
    return result


def row(text: str, system: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{system} "))


async def test_page_status_and_api_agree_during_a_rollout_and_a_drain(
    page: Page,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    data = router_data(
        redis_server.url,
        gateways,
        heartbeat_interval=0.2,
        rollout_tick=0.05,
        leader_ttl=0.5,
        drain_stall_after=3.0,
    )
    config = write_toml(tmp_path / "router.toml", data)
    router = await routers(build_config(data, {}))
    await open_sessions(http, router.proxy_url, 3)  # calls on a that do not end
    await log_in(page, router.admin_url)
    cards = {sid: page.locator(f'.card[data-system="{sid}"]') for sid in SYSTEMS}

    # --- a rollout a -> b, held at 25 % --------------------------------------------------
    async with http.post(
        router.admin_url + "/api/rollout",
        json={"system": "b", "steps": "25,100", "interval": 3600},
        headers=ADMIN_AUTH,
    ) as resp:
        assert resp.status == 201, await resp.text()
    headline = "rollout a -> b: 25 % of new sessions to b"
    await expect(page.locator("#headline")).to_have_text(headline)
    await expect(cards["a"].locator('[data-field="state"]')).to_have_text("active 75 %")
    await expect(cards["b"].locator('[data-field="state"]')).to_have_text("rollout target 25 %")
    await expect(cards["a"].locator('[data-field="open"]')).to_have_text("3")
    await page.screenshot(path=str(tmp_path / "rollout.png"), full_page=True)

    view = await shown(page)
    api = await api_status(http, router)
    text = (await cli_status(config)).stdout
    doc = orjson.loads((await cli_status(config, "--json")).stdout)
    assert view["headline"] == api["headline"] == doc["headline"] == headline
    assert f"active   a: {headline}" in text
    for sid in SYSTEMS:
        badge = view["systems"][sid]["badge"]
        assert badge == by_id(api)[sid]["badge"] == by_id(doc)[sid]["badge"]
        assert view["systems"][sid]["open"] == str(by_id(api)[sid]["open"])
        assert by_id(api)[sid]["open"] == by_id(doc)[sid]["open"]
        words = row(text, sid).split()
        assert words[1 : 2 + len(badge.split())] == [*badge.split(), view["systems"][sid]["open"]]
        assert by_id(api)[sid]["share"] == by_id(doc)[sid]["share"]
    # The target takes new sessions: no drain to estimate, on any surface.
    assert view["systems"]["b"]["estimate"] == by_id(api)["b"]["estimate"] == ""

    # --- promoted: b active, a drains; its calls do not end, so it stalls ----------------
    async with http.post(
        router.admin_url + "/api/rollout/promote", json={}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200, await resp.text()
    await expect(page.locator("#headline")).to_have_text("new sessions go to b")
    watch = subprocess.Popen(
        [sys.executable, "-m", "router", "status", "--config", str(config)]
        + ["--watch", "--json", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert watch.stdout is not None
        # `status --watch` keeps its own history: a frame once it has watched the stall.
        frame: dict[str, Any] = {}
        while (by_id(frame)["a"]["badge"] if "systems" in frame else "") != "draining + stalled":
            line = await asyncio.to_thread(watch.stdout.readline)
            assert line, watch.stderr.read() if watch.stderr else ""
            frame = orjson.loads(line)
        await expect(cards["a"].locator('[data-field="state"]')).to_have_text("draining + stalled")
        await page.screenshot(path=str(tmp_path / "drain.png"), full_page=True)
        view = await shown(page)
        api = await api_status(http, router)
    finally:
        watch.terminate()
        watch.communicate(timeout=20)
    text = (await cli_status(config)).stdout
    assert view["headline"] == api["headline"] == frame["headline"] == "new sessions go to b"
    for sid, badge, open_ in (("a", "draining + stalled", "3"), ("b", "active", "0")):
        assert view["systems"][sid]["badge"] == by_id(api)[sid]["badge"] == badge
        assert by_id(frame)[sid]["badge"] == badge
        assert view["systems"][sid]["open"] == open_ == str(by_id(api)[sid]["open"])
        assert by_id(frame)[sid]["open"] == int(open_)
    for estimate in (view["systems"]["a"]["estimate"], by_id(api)["a"]["estimate"]):
        assert estimate.startswith("stalled: no fall for")
    assert by_id(frame)["a"]["estimate"].startswith("stalled: no fall for")
    assert by_id(api)["a"]["stalled"] and by_id(frame)["a"]["stalled"]
    assert by_id(api)["a"]["drain_eta"] is None  # stalled: no end is promised
    # A one-shot `status` has watched nothing yet: the same state without the stall.
    assert row(text, "a").split()[1:3] == ["draining", "3"]
    assert "new sessions go to b" in text


async def test_a_switch_some_instance_did_not_apply_is_a_warning_naming_it(
    page: Page,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    tmp_path: Path,
) -> None:
    """A change is done when every live instance applied it: the page names the laggard
    where `switch` and `status` name it, and does not call the switch a success."""
    data = router_data(redis_server.url, gateways, heartbeat_interval=0.2, confirm_timeout=0.3)
    config = write_toml(tmp_path / "router.toml", data)
    router = await routers(build_config(data, {}))
    await log_in(page, router.admin_url)
    await expect(page.locator("#instance-rows tr")).to_have_count(1)
    # An instance that beats but never applies anything (a stuck process, as Redis sees it).
    stuck = {"id": "stuck:1", "seen": time.time() + 60, "applied": {"generation": 0}}
    redis_server.command("HSET", "tokenrouter:instances", "stuck:1", orjson.dumps(stuck).decode())
    await page.locator('.card[data-system="b"] form[data-action="switch"] button').click()
    await page.click("#confirm-ok")
    flash = page.locator("#flash")
    await expect(flash).to_contain_text("NOT applied by stuck:1")
    await expect(flash).to_have_class(re.compile(r"\bwarn\b"))
    note = page.locator("#instances-note")
    await expect(note).to_contain_text("2 live, 1 not on the current state: stuck:1")
    await expect(note).to_have_class(re.compile(r"\bbehind\b"))
    text = (await cli_status(config)).stdout
    assert "instances: 2 live, 1 not on the current state: stuck:1" in text
