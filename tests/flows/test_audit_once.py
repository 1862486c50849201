"""Every change of the active system is audited exactly once, whoever saw or made it."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from tests.helpers import (
    ADMIN_AUTH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    switch_to,
    wait_until,
)


async def resynced(instances: Sequence[RunningRouter]) -> None:
    """Until every instance has completed two more whole re-reads (audit included): the
    second began after this call, so it saw the latest change. resync_interval is 0.5 s."""
    watchers = [r.server.runtime.watcher for r in instances]
    targets = [w.syncs + 2 for w in watchers]
    await wait_until(
        lambda: all(w.syncs >= t for w, t in zip(watchers, targets, strict=True)), timeout=20
    )


async def test_every_change_is_audited_exactly_once(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways)
    instances = tuple([await routers(config) for _ in range(3)])
    # The seed is audited behind the first read: a SET before that would be recorded in its
    # place (the audit records what it finds).
    await wait_until(lambda: not any(r.server.runtime.watcher.audit_pending for r in instances))
    await switch_to(redis_server, instances, "b")  # a bare SET, seen by all three
    await resynced(instances)  # none may record it again
    async with http.post(
        instances[1].admin_url + "/api/switch", json={"system": "a"}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200
    await wait_until(lambda: all(r.active == "a" for r in instances))
    await switch_to(redis_server, instances, "b")
    await resynced(instances)
    async with http.get(instances[2].admin_url + "/api/audit", headers=ADMIN_AUTH) as resp:
        entries = (await resp.json())["entries"]
    changes = [(e["from"], e["to"], e["source"].split(" ")[0]) for e in reversed(entries)]
    assert changes == [
        ("", "a", "seed"),
        ("a", "b", "external"),
        ("b", "a", "api"),
        ("a", "b", "external"),
    ]


async def test_offline_changes_from_redis_cli_are_audited_exactly_once(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways)
    instances = tuple([await routers(config) for _ in range(3)])
    await wait_until(lambda: not any(r.server.runtime.watcher.audit_pending for r in instances))
    await resynced(instances)

    def offline_everywhere(want: bool) -> bool:
        return all(r.server.runtime.holder.current.is_offline("b") == want for r in instances)

    redis_server.command("SADD", "tokenrouter:offline", "b")  # past token-router: redis-cli
    await wait_until(lambda: offline_everywhere(True))
    await resynced(instances)  # none may record it again
    redis_server.command("SREM", "tokenrouter:offline", "b")
    await wait_until(lambda: offline_everywhere(False))
    await resynced(instances)
    # token-router's own change is audited by its script, never again by an observer
    async with http.post(
        instances[0].admin_url + "/api/systems/b/offline", headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200
    await wait_until(lambda: offline_everywhere(True))
    await resynced(instances)
    # a mark of the active system is a refused value, not a change: not recorded as one;
    # its refusal is, once (issue 25 item 6)
    redis_server.command("SADD", "tokenrouter:offline", "a")
    await resynced(instances)
    async with http.get(instances[2].admin_url + "/api/audit", headers=ADMIN_AUTH) as resp:
        entries = (await resp.json())["entries"]
    changes = [(e["action"], e["to"], e["source"].split(" ")[0]) for e in reversed(entries)]
    assert changes == [
        ("switch", "a", "seed"),
        ("offline", "b", "external"),
        ("online", "b", "external"),
        ("offline", "b", "api"),
        ("offline-refused", "a", "external"),
    ]
    first = next(e for e in entries if e["action"] == "online")
    assert first["reason"] == "SREM outside token-router"
