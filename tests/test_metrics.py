"""Prometheus /metrics on the admin listener, in one process and across --workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.helpers import (
    ADMIN_TOKEN,
    HOST,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterProcess,
    RunningRouter,
    free_port,
    router_data,
    wait_ready,
    wait_until,
    write_toml,
)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in exposition text (labels in any order), or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def proc_rss(text: str, role: str) -> set[int]:
    """The pids of `role` with a resident memory sample (over 1 MB) in exposition text."""
    found = re.findall(
        rf'^tokenrouter_resident_memory_bytes{{pid="(\d+)",role="{role}"}} (\S+)$', text, re.M
    )
    return {int(pid) for pid, value in found if float(value) > 1e6}


async def scrape(http: aiohttp.ClientSession, admin: str) -> str:
    async with http.get(admin + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await resp.text()


async def test_requests_latency_state_and_switches(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    router: RunningRouter,
    http: aiohttp.ClientSession,
) -> None:
    for _ in range(3):
        async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)):
            pass
    gateways["a"].state.set_failure(500, 1)
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)):
        pass
    # Affinity records reach Redis behind the answers (affinity.py): open items count them
    # only once the writer has sent them.
    await router.server.runtime.affinity.flush()
    text = await scrape(http, router.admin_url)
    token = {"route": "token_create", "system": "a"}
    assert sample(text, "tokenrouter_requests_total", status="200", **token) == 3
    assert sample(text, "tokenrouter_requests_total", status="500", **token) == 1
    assert sample(text, "tokenrouter_upstream_seconds_count", **token) == 4
    assert sample(text, "tokenrouter_active", system="a") == 1
    assert sample(text, "tokenrouter_active", system="b") == 0
    assert sample(text, "tokenrouter_store_up") == 1
    assert sample(text, "tokenrouter_refused_active") == 0
    assert sample(text, "tokenrouter_open_items", system="a") == 3

    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: router.active == "b")
    redis_server.command("SET", "tokenrouter:active", "bogus")
    await wait_until(lambda: router.server.runtime.holder.current.refused is not None)
    text = await scrape(http, router.admin_url)
    assert sample(text, "tokenrouter_switches_observed") == 1
    assert sample(text, "tokenrouter_refused_values_observed") == 1
    assert sample(text, "tokenrouter_refused_active") == 1
    assert sample(text, "tokenrouter_active", system="b") == 1

    redis_server.stop()
    await wait_until(lambda: router.server.runtime.holder.degraded)
    text = await scrape(http, router.admin_url)
    assert sample(text, "tokenrouter_store_up") == 0
    assert sample(text, "tokenrouter_open_items", system="a") is None  # unknown, not 0


async def test_metrics_add_up_across_workers(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    proxy, admin = f"http://{HOST}:{free_port()}", f"http://{HOST}:{free_port()}"
    data = router_data(redis_server.url, gateways, listen=proxy[7:], admin_listen=admin[7:])
    router = RouterProcess(write_toml(tmp_path / "router.toml", data), workers=2)
    router.start()
    try:
        await wait_ready(admin)
        for _ in range(30):
            # New connections, so both workers take some of them.
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.post(proxy + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as resp,
            ):
                assert resp.status == 200
        for _ in range(6):  # whichever worker answers the scrape, the total is the same
            async with aiohttp.ClientSession() as fresh:
                text = await scrape(fresh, admin)
            total = sample(
                text, "tokenrouter_requests_total", route="token_create", system="a", status="200"
            )
            assert total == 30
            # The memory of the whole instance, whichever worker answers: the supervisor
            # (the process we started) and both workers.
            assert router.proc is not None
            assert proc_rss(text, "supervisor") == {router.proc.pid}
            assert len(proc_rss(text, "worker")) == 2
        router.signal(signal.SIGTERM)
        assert await asyncio.to_thread(router.wait, 20) == 0
    finally:
        router.kill()


def test_one_process_counts_are_exposed_like_prometheus_client_would() -> None:
    """Without a lock per observation (one process), the exposition keeps its meaning:
    a bucket counts observations <= its bound, cumulatively; counts and sums per label set."""
    from router.metrics import Metrics

    metrics = Metrics()
    assert not metrics.shared
    for seconds in (0.0005, 0.0007, 0.003, 20.0):
        metrics.observe("token_create", "a", 200, seconds)
    metrics.observe("token_create", "a", 0, None)
    get = metrics.registry.get_sample_value
    labels = {"system": "a", "route": "token_create"}
    assert get("tokenrouter_requests_total", {**labels, "status": "200"}) == 4
    assert get("tokenrouter_requests_total", {**labels, "status": "0"}) == 1
    assert get("tokenrouter_upstream_seconds_bucket", {**labels, "le": "0.0005"}) == 1
    assert get("tokenrouter_upstream_seconds_bucket", {**labels, "le": "0.001"}) == 2
    assert get("tokenrouter_upstream_seconds_bucket", {**labels, "le": "0.005"}) == 3
    assert get("tokenrouter_upstream_seconds_bucket", {**labels, "le": "10.0"}) == 3
    assert get("tokenrouter_upstream_seconds_bucket", {**labels, "le": "+Inf"}) == 4
    assert get("tokenrouter_upstream_seconds_count", labels) == 4
    assert get("tokenrouter_upstream_seconds_sum", labels) == pytest.approx(20.0042)


async def test_instance_facts_for_the_alerts(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    router: RunningRouter,
    http: aiohttp.ClientSession,
) -> None:
    """What deploy/prometheus alerts on beyond the state gauges: readiness, Redis persistence,
    the last rollout's state and end, the drain stall verdict, the processes' memory."""
    text = await scrape(http, router.admin_url)
    assert sample(text, "tokenrouter_ready") == 1.0
    # The fixture's redis-server keeps nothing (--save "" --appendonly no).
    assert sample(text, "tokenrouter_store_persistence", mode="none") == 1.0
    assert sample(text, "tokenrouter_drain_stalled", system="b") == 0.0
    assert "tokenrouter_rollout_state{" not in text
    rss = sample(text, "tokenrouter_resident_memory_bytes", role="worker", pid=str(os.getpid()))
    assert rss is not None and rss > 10_000_000  # this test process runs the router

    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"system": "b", "steps": "5,100", "interval": 60}
    async with http.post(router.admin_url + "/api/rollout", json=body, headers=auth) as resp:
        assert resp.status == 201, await resp.text()
    text = await scrape(http, router.admin_url)
    assert sample(text, "tokenrouter_rollout_state", target="b", source="a", state="running") == 1
    assert "tokenrouter_rollout_ended_timestamp_seconds{" not in text
    async with http.post(router.admin_url + "/api/rollout/abort", json={}, headers=auth) as resp:
        assert resp.status == 200, await resp.text()
    text = await scrape(http, router.admin_url)
    assert sample(text, "tokenrouter_rollout_state", target="b", source="a", state="aborted") == 1
    assert sample(text, "tokenrouter_rollout_state", state="running") is None
    ended = sample(text, "tokenrouter_rollout_ended_timestamp_seconds", state="aborted")
    assert ended is not None and abs(ended - time.time()) < 60

    # Stopping: /readyz turns 503 and the gauge follows it.
    router.server.runtime.stopping = True
    text = await scrape(http, router.admin_url)
    assert sample(text, "tokenrouter_ready") == 0.0
    router.server.runtime.stopping = False
    redis_server.stop()
    await wait_until(lambda: router.server.runtime.holder.degraded)
    text = await scrape(http, router.admin_url)
    # Degraded is still ready (fail-static); the rollout could not be read: no sample.
    assert sample(text, "tokenrouter_ready") == 1.0
    assert sample(text, "tokenrouter_store_up") == 0.0
    assert "tokenrouter_rollout_state{" not in text
