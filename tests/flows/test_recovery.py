"""Redis back empty (and back with its data): the black-box drill of issue 11 with two router
instances, a brand-new third one, the simulated systems and a real redis-server restarted."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from router.admin.session import COOKIE
from router.simulator.library import library_files
from router.state.recovery import counts_unknown_reason, persistence_risk
from router.state.rollout import Share
from router.state.store import StoredState, persistence_mode
from tests.admin.test_auth import log_in
from tests.admin.test_guarded_api import FAST, api, audit
from tests.helpers import (
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    wait_until,
)

AUTH = {"Authorization": "Bearer test-admin-token"}
JS = "/gateway/adapter.js"
SMALL = [JS, "/assistserver/sdk/web/consumer/assist.css"]


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    server = RedisServer(persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def new_token(http: aiohttp.ClientSession, router: RunningRouter) -> str:
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as resp:
        assert resp.status == 200
        return str((await resp.json())["sessionid"])


async def current(http: aiohttp.ClientSession, router: RunningRouter) -> dict[str, Any]:
    async with http.get(router.proxy_url + "/router/current") as resp:
        doc: dict[str, Any] = await resp.json()
        return doc


async def row(http: aiohttp.ClientSession, router: RunningRouter, sid: str) -> dict[str, Any]:
    async with http.get(router.admin_url + "/api/status", headers=AUTH) as resp:
        doc: dict[str, Any] = await resp.json()
    return next(s for s in doc["systems"] if s["id"] == sid)


def exists(redis: RedisServer, key: str) -> bool:
    return redis.command("EXISTS", key) == ":1"


async def test_empty_restart_with_two_instances(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    r1 = await routers(make_config(redis_server.url, gateways, release_paths=SMALL))
    r2 = await routers(make_config(redis_server.url, gateways, release_paths=SMALL))

    async def released() -> bool:
        return (await current(http, r1))["release"] is not None

    await wait_until(released, timeout=15)
    old = (await current(http, r1))["release"]
    sid1 = await new_token(http, r1)  # issued through r1 only
    sid2 = await new_token(http, r2)
    async with http.put(r1.proxy_url + "/assistserver/shortcode/create") as resp:
        code = (await resp.json())["shortCode"]
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: r1.active == "b" and r2.active == "b")
    # A is upgraded in place: its 1.0 release now lives only in Redis and the archives.
    gateways["a"].state.set_version("1.1")
    for r in (r1, r2):
        await r.server.runtime.affinity.flush()
    epoch = redis_server.command("GET", "tokenrouter:epoch")

    redis_server.restart()  # no persistence: back empty

    def restored() -> bool:
        return (
            exists(redis_server, "tokenrouter:epoch")
            and exists(redis_server, f"tokenrouter:aff:session:{sid1}")
            and exists(redis_server, f"tokenrouter:aff:session:{sid2}")
            and exists(redis_server, f"tokenrouter:release:{old}:meta")
            and not r1.server.runtime.write_back_due
            and not r2.server.runtime.write_back_due
        )

    await wait_until(restored, timeout=20, interval=0.05)
    assert redis_server.command("GET", "tokenrouter:epoch") != epoch
    # The active system came back from the routers' last known state, not the default (a).
    assert redis_server.command("GET", "tokenrouter:active").endswith("b")
    assert r1.active == r2.active == "b"

    # A follow-up for an old session reaches its system from the other instance.
    async with http.delete(r2.proxy_url + f"/gateway/sessions/session/id/{sid1}") as resp:
        assert resp.status == 204
        assert resp.headers["X-Token-Router-System"] == "a"
    async with http.get(
        r2.proxy_url + "/assistserver/shortcode/consumer", params={"appkey": code}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Token-Router-System"] == "a"

    # A brand-new instance (its own empty archive) serves the old release from the store.
    r3 = await routers(make_config(redis_server.url, gateways, release_paths=SMALL))
    async with http.get(
        f"{r3.proxy_url}/v/{old}{JS}", headers={"Accept-Encoding": "identity"}
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == library_files("1.0")[JS][0]

    # Drain is not falsely "drained": sid2 and the short code are still open on a.
    async def counted() -> bool:
        found = await row(http, r3, "a")
        assert found["state"] == "draining", found  # never drained on the way
        return bool(found["open"] == 2)

    await wait_until(counted, timeout=15, interval=0.1)


async def test_drain_unknown_until_written_back(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Between an empty restart and the write-back, the counts are unknown, not 0."""
    router = await routers(make_config(redis_server.url, gateways))
    await new_token(http, router)
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: router.active == "b")
    await router.server.runtime.affinity.flush()
    redis_server.restart()
    # Empty until the router notices, then written back: unknown all along, never 0.
    found = await row(http, router, "a")
    assert (found["state"], found["open"], found["source"]) == ("draining", None, "unknown")

    async def back() -> bool:
        return bool((await row(http, router, "a"))["open"] == 1)

    await wait_until(back, timeout=20, interval=0.1)


async def test_persistent_restart_keeps_state_without_write_back(
    persistent_redis: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(persistent_redis.url, gateways))
    sid = await new_token(http, router)
    persistent_redis.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: router.active == "b")
    await router.server.runtime.affinity.flush()
    epoch = persistent_redis.command("GET", "tokenrouter:epoch")
    lost: list[bool] = []
    router.server.runtime.watcher.lost.append(lambda: lost.append(True))

    persistent_redis.restart()

    await wait_until(lambda: router.server.runtime.holder.degraded is False, timeout=10)
    await router.server.runtime.watcher.sync()
    assert persistent_redis.command("GET", "tokenrouter:epoch") == epoch
    assert lost == []
    assert exists(persistent_redis, f"tokenrouter:aff:session:{sid}")

    async def counted() -> bool:
        # (Unknown for RESTORE_GRACE after the epoch the router itself began at its start.)
        return bool((await row(http, router, "a"))["open"] == 1)

    await wait_until(counted, timeout=15, interval=0.1)


@pytest.mark.parametrize(
    ("appendonly", "save", "mode"),
    [
        ("yes", "", "aof"),
        ("no", "3600 1 300 100", "rdb"),
        ("yes", "3600 1", "aof+rdb"),
        ("no", "", "none"),
        (None, None, "unknown"),
    ],
)
def test_persistence_mode(appendonly: str | None, save: str | None, mode: str) -> None:
    assert persistence_mode(appendonly, save) == mode
    risk = persistence_risk(mode, "redis://r:6379/0")
    assert bool(risk) == (mode in ("none", "unknown"))


async def test_persistence_named_as_a_risk_at_start_and_on_the_page(
    redis_server: RedisServer,
    persistent_redis: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="router.recovery"):
        bare = await routers(make_config(redis_server.url, gateways))
    assert "has no persistence" in caplog.text
    safe = await routers(make_config(persistent_redis.url, gateways))
    for router, mode, risky in ((bare, "none", True), (safe, "aof", False)):
        async with http.get(router.admin_url + "/api/status", headers=AUTH) as resp:
            store = (await resp.json())["store"]
        assert store["persistence"] == mode
        assert bool(store["risk"]) is risky
    cookie = await log_in(http, bare.admin_url)
    async with http.get(bare.admin_url + "/", headers={"Cookie": f"{COOKIE}={cookie}"}) as resp:
        page = await resp.text()
    assert "Risk: Redis persistence" in page and "has no persistence" in page


async def test_last_known_state_beats_a_newcomers_default(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
) -> None:
    """Redis comes back empty while an old instance (on b) is still in its reconnect
    backoff, and a brand-new instance (default a) starts first: b wins, everywhere."""
    old = await routers(make_config(redis_server.url, gateways, redis_retry_max=2.0))
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: old.active == "b")
    redis_server.stop()
    holder = old.server.runtime.holder
    await wait_until(
        lambda: holder.degraded_since is not None and time.time() - holder.degraded_since > 1.5,
        timeout=10,
    )
    redis_server.start()
    new = await routers(make_config(redis_server.url, gateways))
    await wait_until(
        lambda: (
            redis_server.command("GET", "tokenrouter:active").endswith("b")
            and new.active == "b"
            and old.active == "b"
        ),
        timeout=15,
        interval=0.05,
    )
    assert redis_server.command("EXISTS", "tokenrouter:active:default") == ":0"


@pytest.mark.parametrize(
    ("stored", "unknown"),
    [
        (StoredState(active=None, offline=frozenset(), epoch=None), True),  # empty: lost
        (StoredState(active="a", offline=frozenset(), epoch=None), False),  # no router yet
        (StoredState(active="a", offline=frozenset(), epoch="e:1"), False),
        (StoredState(active="a", offline=frozenset(), epoch="e:1", restoring=98.0), True),
        (StoredState(active="a", offline=frozenset(), epoch="e:1", restoring=90.0), False),
    ],
    ids=["empty", "cli-only", "normal", "writing-back", "written-back"],
)
def test_counts_unknown_reason(stored: StoredState, unknown: bool) -> None:
    assert bool(counts_unknown_reason(stored, now=100.0, grace=5.0)) is unknown


async def test_a_running_rollout_is_put_back_and_audited(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Issue 25 item 4: Redis back empty put back active, offline, affinity and releases but
    not the rollout: the share dropped from 50 % to 0, unrecorded."""
    config = make_config(redis_server.url, gateways, **FAST)
    fleet = [await routers(config), await routers(config)]
    body = {"system": "b", "steps": "50,100", "interval": 3600}
    status, doc = await api(http, fleet[0], "/api/rollout", body)
    assert status == 201, doc
    started = doc["rollout"]
    await wait_until(lambda: all(r.server.runtime.holder.current.rollout for r in fleet))
    shares: list[float] = []
    for router in fleet:  # every change of the share, from here on
        router.server.runtime.holder.listeners.append(
            lambda _, new: shares.append(0.0 if new.rollout is None else new.rollout.fraction)
        )

    redis_server.restart()  # no persistence: back empty

    await wait_until(lambda: exists(redis_server, "tokenrouter:rollout"), timeout=20)
    stored = orjson.loads(redis_server.command("GET", "tokenrouter:rollout").split("\r\n")[1])
    assert {k: stored[k] for k in started if k in stored} == {
        k: v for k, v in started.items() if k in stored
    }
    assert stored["state"] == "running" and stored["steps"][stored["step"]] == 50

    def restored_everywhere() -> bool:
        return all(
            (r.server.runtime.holder.current.rollout or Share("", 0, "", 0)).fraction == 0.5
            for r in fleet
        )

    await wait_until(restored_everywhere, timeout=20)
    assert 0.0 not in shares, shares  # never dropped to 0 on the way
    entries = [e for e in await audit(http, fleet[1]) if e["action"] == "rollout-restore"]
    assert len(entries) == 1, entries
    assert (entries[0]["from"], entries[0]["to"]) == ("a", "b")
    assert "Redis lost its state" in entries[0]["reason"]
    assert "step 1/2, 50 %" in entries[0]["reason"]
    # The controller drives it on: an operator's abort works as before.
    status, doc = await api(http, fleet[1], "/api/rollout/abort", {})
    assert status == 200 and doc["rollout"]["state"] == "aborted", doc
