"""The admin page in a real browser: Debian's Chromium driven by Playwright (async API).

A real router (both listeners), a real redis-server and two simulated systems. The browser is
never downloaded: it is /usr/bin/chromium, headless. Waits are Playwright's auto-waiting
`expect` (a condition with a deadline), never sleeps.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from router.config import RouterConfig
from tests.helpers import (
    ADMIN_AUTH,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
TOKEN = "test-admin-token"

# Playwright's `expect` waits 5 s by default; the page's first release check fetches every
# library file, which a busy machine can take longer for. A deadline, not a delay.
expect.set_options(timeout=20_000)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    # A CSP violation or script error shows up here; the page must run clean.
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    try:
        yield page
    finally:
        await context.close()
    assert errors == []


async def log_in(page: Page, admin_url: str) -> None:
    await page.goto(admin_url + "/")
    await expect(page).to_have_url(admin_url + "/login")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(admin_url + "/")
    await expect(page.locator("#feed")).to_have_attribute("data-state", "live")


async def open_sessions(http: aiohttp.ClientSession, proxy_url: str, n: int) -> None:
    for _ in range(n):
        async with http.post(proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
            assert resp.status == 200


async def test_operator_logs_in_switches_and_sees_a_bare_redis_set(
    page: Page, router: RunningRouter, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    await log_in(page, router.admin_url)
    a, b = page.locator('.card[data-system="a"]'), page.locator('.card[data-system="b"]')
    await expect(a).to_have_attribute("data-state", "active")
    await expect(b).to_have_attribute("data-state", "drained")
    await expect(a.locator('[data-field="gateway"]')).to_have_text(
        router.server.config.systems["a"].gateway
    )
    await expect(a.locator('[data-field="public_url"]')).to_have_text("https://a.example.com:8443")
    await expect(a.locator('[data-field="health"]')).to_contain_text("healthy")
    await expect(a.locator('[data-field="label"]')).to_contain_text("1.0")
    await expect(b.locator('[data-field="label"]')).to_contain_text("2.0")
    await expect(page.locator("#active-system")).to_have_text("a")

    await open_sessions(http, router.proxy_url, 3)
    await expect(a.locator('[data-field="open"]')).to_have_text("3")

    # Switch, with a confirmation that names both systems and the open count on the old one.
    dialog = page.locator("#confirm")
    await b.locator('form[data-action="switch"] button').click()
    await expect(dialog).to_be_visible()
    await expect(page.locator("#confirm-text")).to_have_text("Switch new sessions from a to b?")
    await expect(page.locator("#confirm-ok")).to_have_class("primary")
    await expect(page.locator("#confirm-detail")).to_contain_text("a holds 3 open sessions")
    await page.click("#confirm-cancel")
    await expect(dialog).to_be_hidden()
    assert router.active == "a"

    await b.locator('form[data-action="switch"] button').click()
    await page.click("#confirm-ok")
    await expect(b).to_have_attribute("data-state", "active")
    await expect(a).to_have_attribute("data-state", "draining")
    await expect(page.locator("#flash")).to_contain_text("new sessions go to b")
    first_row = page.locator("#audit-rows tr").first
    await expect(first_row).to_contain_text("page")
    await expect(first_row.locator("td").nth(3)).to_have_text("a")
    await expect(first_row.locator("td").nth(4)).to_have_text("b")
    assert router.active == "b"

    # A bare SET (what an operator does with redis-cli) switches back; the page follows live.
    redis_server.command("SET", "tokenrouter:active", "a")
    await expect(a).to_have_attribute("data-state", "active")
    await expect(b).to_have_attribute("data-state", "drained")
    await expect(first_row).to_contain_text("external")
    await expect(page.locator("#active-system")).to_have_text("a")

    # A value naming no configured system is refused, and the page says so.
    refused = page.locator("#banner-refused")
    await expect(refused).to_be_hidden()
    redis_server.command("SET", "tokenrouter:active", "nosuch")
    await expect(refused).to_be_visible()
    await expect(refused).to_contain_text("nosuch")
    await expect(refused).to_contain_text("tokenrouter:active")
    assert router.active == "a"
    redis_server.command("SET", "tokenrouter:active", "a")
    await expect(refused).to_be_hidden()


async def test_offline_online_refusals_and_releases(
    page: Page, router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    await log_in(page, router.admin_url)
    b = page.locator('.card[data-system="b"]')
    await b.locator('form[data-action="offline"] button').click()
    await expect(page.locator("#confirm-text")).to_have_text("Mark b offline?")
    # A destructive action: the confirm button is the red one, and a reason is asked for.
    await expect(page.locator("#confirm-ok")).to_have_class("danger-solid")
    await expect(page.locator("#confirm-reason")).to_be_visible()
    await page.fill("#confirm-reason", "upgrading b")
    await page.click("#confirm-ok")
    await expect(b).to_have_attribute("data-state", "offline")
    first_row = page.locator("#audit-rows tr").first
    await expect(first_row).to_contain_text("offline")
    await expect(first_row).to_contain_text("upgrading b")
    await expect(b.locator('form[data-action="online"]')).to_be_visible()

    # Refused: switching to an offline system says why and offers the override; declined,
    # nothing changes.
    await b.locator('form[data-action="switch"] button').click()
    await page.click("#confirm-ok")
    await expect(page.locator("#confirm-title")).to_have_text("Refused by a safety gate")
    await expect(page.locator("#confirm-text")).to_contain_text("Refused (offline)")
    await expect(page.locator("#confirm-reason")).to_be_visible()
    await page.click("#confirm-cancel")
    await expect(page.locator("#flash")).to_contain_text("Refused:")
    await expect(page.locator("#flash")).to_contain_text("offline")
    assert router.active == "a"

    await b.locator('form[data-action="online"] button').click()
    await expect(b).to_have_attribute("data-state", "drained")

    # Refresh releases (off in this router's config): the page says why nothing was found.
    await page.click('form[data-action="refresh-releases"] button')
    flash = page.locator("#flash")
    await expect(flash).to_have_text(re.compile(r"^Refresh incomplete: a: .*release_paths"))


async def test_release_per_system_and_refresh(
    page: Page,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
) -> None:
    paths = RouterConfig().release_paths  # the defaults: the simulated systems serve them
    router = await routers(make_config(redis_server.url, gateways, release_paths=list(paths)))
    await log_in(page, router.admin_url)
    releases = router.server.runtime.releases
    for sid, label in (("a", "1.0"), ("b", "2.0")):
        card = page.locator(f'.card[data-system="{sid}"]')
        await expect(card.locator('[data-field="release"]')).not_to_have_text("unknown")
        release = releases.view.release_of(sid)
        assert release is not None
        await expect(card.locator('[data-field="release"]')).to_have_text(release)
        await expect(card.locator('[data-field="label"]')).to_have_text(f"label {label}")
    await page.click('form[data-action="refresh-releases"] button')
    flash = page.locator("#flash")
    await expect(flash).to_contain_text("Releases refreshed: a: ")
    await expect(flash).to_contain_text("unchanged")


async def test_csrf_rejection_and_logout(page: Page, router: RunningRouter) -> None:
    await log_in(page, router.admin_url)
    # A forged form: the session cookie rides along, the CSRF token does not fit.
    await page.evaluate(
        "document.querySelectorAll('input[name=csrf_token]').forEach(i => i.value = 'forged')"
    )
    await page.locator('.card[data-system="b"] form[data-action="switch"] button').click()
    await page.click("#confirm-ok")
    await expect(page.locator("#flash")).to_contain_text("CSRF token missing or wrong")
    assert router.active == "a"
    # A script on another origin cannot even try: SameSite=Strict and the Origin check.
    status = await page.evaluate(
        """async () => (await fetch('/api/switch', {method: 'POST',
               headers: {'Content-Type': 'application/json'},
               body: JSON.stringify({system: 'b'})})).status"""
    )
    assert status == 403
    cookies = await page.context.cookies()
    session = next(c for c in cookies if c["name"] == "tokenrouter_admin")
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""

    await page.reload()
    await page.click(".logout button")
    await expect(page).to_have_url(router.admin_url + "/login?out=1")
    await expect(page.locator(".flash")).to_contain_text("logged out")
    assert not [c for c in await page.context.cookies() if c["name"] == "tokenrouter_admin"]
    await page.goto(router.admin_url + "/")
    await expect(page).to_have_url(router.admin_url + "/login")


async def test_degraded_banner_and_lost_feed(
    page: Page, router: RunningRouter, redis_server: RedisServer, routers: RouterFactory
) -> None:
    await log_in(page, router.admin_url)
    degraded = page.locator("#banner-degraded")
    await expect(degraded).to_be_hidden()
    redis_server.stop()
    await expect(degraded).to_be_visible()
    await expect(degraded).to_contain_text("fail-static")
    redis_server.start()
    await expect(degraded).to_be_hidden()

    # The router goes away: the page says its live feed is lost instead of going quietly stale.
    routers.routers.remove(router)
    await router.server.stop()
    await expect(page.locator("#feed")).to_have_attribute("data-state", "lost")
    await expect(page.locator("#banner-feed")).to_be_visible()
    await expect(page.locator("#banner-feed")).to_contain_text("Live updates lost")


@pytest.mark.parametrize(
    ("zone", "label"),
    [("UTC", "UTC"), ("Asia/Kolkata", "UTC+05:30"), ("America/Sao_Paulo", "UTC-03:00")],
)
async def test_every_time_on_the_page_names_its_zone(
    browser: Browser,
    router: RunningRouter,
    http: aiohttp.ClientSession,
    zone: str,
    label: str,
) -> None:
    context = await browser.new_context(timezone_id=zone)
    try:
        page = await context.new_page()
        await log_in(page, router.admin_url)
        async with http.get(router.admin_url + "/api/audit?count=1", headers=ADMIN_AUTH) as resp:
            [seed] = (await resp.json())["entries"]
        shown = datetime.fromtimestamp(seed["time"], ZoneInfo(zone))
        first_time = page.locator("#audit-rows tr").first.locator("td").first
        await expect(first_time).to_have_text(shown.strftime("%Y-%m-%d %H:%M:%S ") + label)
        clock = r"\d\d:\d\d:\d\d " + re.escape(label)
        await expect(page.locator("#updated")).to_have_text(re.compile(rf"^updated {clock}$"))
        health = page.locator('.card[data-system="a"] [data-field="health"]')
        await expect(health).to_have_text(re.compile(rf"checked {clock}$"))
    finally:
        await context.close()


async def test_gate_override_undo_and_rollout_controls(
    page: Page,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(
        make_config(
            redis_server.url,
            gateways,
            heartbeat_interval=0.2,
            rollout_tick=0.05,
            leader_ttl=0.5,
        )
    )
    await log_in(page, router.admin_url)
    a, b = page.locator('.card[data-system="a"]'), page.locator('.card[data-system="b"]')
    await expect(page.locator("#instance-rows tr")).to_have_count(1)
    await expect(page.locator("#instance-rows")).to_contain_text(router.server.runtime.instance)
    await expect(page.locator("#instances-note")).to_contain_text("all on the current state")

    # Offline of the active system: refused with the reason, overridden with a reason.
    await a.locator('form[data-action="offline"] button').click()
    await page.click("#confirm-ok")
    await expect(page.locator("#confirm-text")).to_contain_text("Refused (active)")
    await page.fill("#confirm-reason", "gateway maintenance")
    await page.click("#confirm-ok")
    await expect(a).to_have_attribute("data-state", "offline")
    first_row = page.locator("#audit-rows tr").first
    await expect(first_row).to_contain_text("offline (forced)")
    await expect(first_row).to_contain_text("gateway maintenance")
    await a.locator('form[data-action="online"] button').click()
    await expect(a).to_have_attribute("data-state", "active")

    # The page sends the active system it displayed: a switch made meanwhile elsewhere wins,
    # this page's switch is refused (compare-and-set) and offers no override.
    await page.evaluate("window.stop()")  # freeze the live feed: the page keeps showing a
    async with http.post(
        router.admin_url + "/api/switch",
        json={"system": "b"},
        headers={"Authorization": "Bearer " + TOKEN},
    ) as resp:
        assert resp.status == 200
    await b.locator('form[data-action="switch"] button').click()
    await page.click("#confirm-ok")
    await expect(page.locator("#flash")).to_contain_text("Refused: the active system is b, not a")
    await page.reload()
    await expect(page.locator("#feed")).to_have_attribute("data-state", "live")
    await expect(b).to_have_attribute("data-state", "active")

    # Undo: back to a, confirmed by the fleet.
    await page.click("#undo-button")
    await expect(page.locator("#confirm-text")).to_contain_text("(a → b)")
    await page.click("#confirm-ok")
    await expect(page.locator("#flash")).to_contain_text("applied by 1/1 instances")
    await expect(a).to_have_attribute("data-state", "active")
    assert router.active == "a"

    # A rollout from the page: progress bar, pause, resume, abort.
    form = page.locator("#rollout-start")
    await form.locator('select[name="system"]').select_option("b")
    await form.locator('input[name="steps"]').fill("10,50,100")
    await form.locator('input[name="interval"]').fill("3600")
    await form.locator("button").click()
    await expect(page.locator("#confirm-text")).to_contain_text("10 → 50 → 100 %")
    await page.click("#confirm-ok")
    running = page.locator("#rollout-running")
    await expect(running).to_be_visible()
    await expect(form).to_be_hidden()
    await expect(page.locator("#rollout-progress")).to_have_attribute("aria-valuenow", "10")
    await expect(running).to_contain_text("Step 1 of 3")
    await expect(running).to_contain_text("10 % of new sessions to b")
    assert router.server.runtime.holder.current.rollout is not None

    await page.click('form[data-action="rollout-pause"] button')
    await expect(page.locator("#rollout")).to_have_attribute("data-state", "paused")
    await expect(running).to_contain_text("paused: steps do not advance")
    await page.click('form[data-action="rollout-resume"] button')
    await expect(page.locator("#rollout")).to_have_attribute("data-state", "running")
    await page.click('form[data-action="rollout-abort"] button')
    await page.click("#confirm-ok")
    await expect(page.locator("#rollout")).to_have_attribute("data-state", "aborted")
    await expect(running).to_be_hidden()
    await expect(page.locator("#rollout-last")).to_contain_text("Last rollout a → b aborted")
    await expect(form).to_be_visible()
    assert router.server.runtime.holder.current.rollout is None
    assert router.active == "a"
    actions = [
        row.split("\t")[1]
        for row in await page.locator("#audit-rows tr").evaluate_all(
            "rows => rows.map(r => r.innerText)"
        )
    ]
    assert actions[:4] == ["rollout-abort", "rollout-resume", "rollout-pause", "rollout-start"]

    # Promote from the page: b becomes active through the gates.
    await form.locator("button").click()
    await page.click("#confirm-ok")
    await expect(running).to_be_visible()
    await page.click('form[data-action="rollout-promote"] button')
    await page.click("#confirm-ok")
    await expect(b).to_have_attribute("data-state", "active")
    await expect(page.locator("#rollout-last")).to_contain_text("promoted")


async def test_history_pages_back_and_returns_to_the_live_view(
    page: Page, router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    # More changes than the live view lists (one `upgrade` alone writes about 8), and more
    # than one older page.
    for i in range(40):
        async with http.post(
            router.admin_url + "/api/switch", json={"system": "ab"[(i + 1) % 2]}, headers=ADMIN_AUTH
        ) as resp:
            assert resp.status == 200, await resp.text()
    async with http.get(router.admin_url + "/api/audit?count=1000", headers=ADMIN_AUTH) as resp:
        every = (await resp.json())["entries"]
    total = len(every)
    assert 35 < total <= 60
    await log_in(page, router.admin_url)
    rows = page.locator("#audit-rows tr")
    count = page.locator("#audit-count")
    await expect(rows).to_have_count(10)
    await expect(count).to_have_text("the newest 10 change(s), live")
    await expect(page.locator("#audit-newest")).to_be_hidden()

    # Older pages through the API's cursor: the 25 before the last one shown, then the rest.
    await page.click("#audit-more")
    await expect(count).to_have_text("older changes, page 2: 25 change(s)")
    await expect(rows).to_have_count(25)
    first = rows.first.locator("td")
    await expect(first.nth(3)).to_have_text(every[10]["from"] or "—")
    await expect(first.nth(4)).to_have_text(every[10]["to"])
    last = rows.last.locator("td")
    await expect(last.nth(4)).to_have_text(every[34]["to"])
    await page.click("#audit-more")
    await expect(rows).to_have_count(total - 35)
    await expect(page.locator("#audit-more")).to_be_hidden()  # the oldest page

    # Back: page 2, then the live list, which follows new changes again.
    await page.click("#audit-newest")
    await expect(count).to_have_text("older changes, page 2: 25 change(s)")
    await page.click("#audit-newest")
    await expect(rows).to_have_count(10)
    await expect(page.locator("#audit-newest")).to_be_hidden()
    async with http.post(
        router.admin_url + "/api/switch", json={"system": "b"}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200
    await expect(rows.first.locator("td").nth(4)).to_have_text("b")


async def test_the_page_shows_the_watch_after_a_switch_and_its_undo(
    page: Page,
    routers: RouterFactory,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
) -> None:
    fast = {"heartbeat_interval": 0.2, "rollout_tick": 0.05, "leader_ttl": 0.5}
    config = make_config(
        redis_server.url,
        gateways,
        post_switch_watch=60,
        watch_span=30,
        watch_min_requests=10,
        gate_probe_age=0.001,
        **fast,
    )
    router = await routers(config)
    await log_in(page, router.admin_url)
    banner = page.locator("#banner-watch")
    await expect(banner).to_be_hidden()
    redis_server.command("SET", "tokenrouter:active", "b")
    await expect(banner).to_be_visible()
    await expect(banner).to_have_attribute("data-state", "watching")
    await expect(banner).to_contain_text("watching b after switch a -> b")
    await expect(banner).to_contain_text("failed share of token requests to b")
    async with http.post(gateways["b"].url + "/_sim/fail", json={"status": 500, "count": None}):
        pass
    for _ in range(12):
        async with http.post(router.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
            await resp.read()
    await expect(banner).to_have_attribute("data-state", "undone", timeout=30_000)
    await expect(banner).to_contain_text("UNDONE by the watch: b -> a")
    await expect(page.locator("#active-system")).to_have_text("a")
