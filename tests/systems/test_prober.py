"""The one gateway prober against real simulated systems on sockets: the page's health, the
gates' fresh answers and the gateways' own counts, all from the same probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from router.config import SystemConfig
from router.systems.prober import LIBRARY_PROBE_PATH, GatewayProber, probe_target
from tests.helpers import HOST, SESSION_BODY, SESSION_PATH, Gateway, free_port, wait_until


def system(sid: str, gateway: Gateway, stats: bool = False) -> SystemConfig:
    return SystemConfig(
        id=sid,
        gateway=gateway.url,
        public_url=f"https://{sid}.example.com",
        stats_url=gateway.url + "/stats" if stats else "",
    )


@pytest.fixture
async def prober(gateways: dict[str, Gateway]) -> AsyncIterator[GatewayProber]:
    async with GatewayProber(
        {"a": system("a", gateways["a"]), "b": system("b", gateways["b"], stats=True)},
        interval=0.05,
        timeout=1.0,
    ) as prober:
        task = asyncio.create_task(prober.run())
        try:
            yield prober
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def test_probe_target_prefers_the_stats_url(gateways: dict[str, Gateway]) -> None:
    assert probe_target(system("a", gateways["a"])) == (
        "HEAD",
        gateways["a"].url + LIBRARY_PROBE_PATH,
    )
    assert probe_target(system("b", gateways["b"], stats=True)) == (
        "GET",
        gateways["b"].url + "/stats",
    )


# --- the page: health while someone looks ---------------------------------------------------


async def test_healthy_systems_report_latency_and_gateway_counts(
    prober: GatewayProber, gateways: dict[str, Gateway]
) -> None:
    assert prober.health["a"].ok is None  # nobody looked yet: nothing probed
    gateways["b"].state.sessions.update({"s1", "s2"})
    prober.demand()
    await wait_until(lambda: all(h.ok for h in prober.health.values()))
    a, b = prober.health["a"], prober.health["b"]
    assert a.status == 200 and a.latency_ms is not None and a.last_error == ""
    assert gateways["a"].state.requests["library"] >= 1
    await wait_until(lambda: prober.health["b"].gateway_sessions == 2)
    assert b.gateway_codes == 0


async def test_failures_keep_the_last_error_after_recovery(
    prober: GatewayProber, gateways: dict[str, Gateway]
) -> None:
    changes: list[bool | None] = []
    prober.listeners.append(lambda: changes.append(prober.health["a"].ok))
    prober.demand()
    await wait_until(lambda: prober.health["a"].ok is True)
    gateways["a"].state.set_failure(503, None)
    await wait_until(lambda: prober.health["a"].ok is False)
    assert prober.health["a"].status == 503
    assert "answered 503" in prober.health["a"].last_error
    gateways["a"].state.set_failure(None, None)
    await wait_until(lambda: prober.health["a"].ok is True)
    # The page still shows what went wrong last, and when.
    assert "answered 503" in prober.health["a"].last_error
    assert prober.health["a"].last_error_at is not None
    assert False in changes and changes[-1] is True


async def test_a_gateway_that_went_away_is_reported(
    prober: GatewayProber, gateways: dict[str, Gateway]
) -> None:
    prober.demand()
    await wait_until(lambda: prober.health["a"].ok is True)
    await gateways["a"].stop()
    await wait_until(lambda: prober.health["a"].ok is False)
    assert prober.health["a"].last_error.startswith("cannot connect")
    assert prober.health["a"].status is None
    assert prober.health["b"].ok is True


# --- the gates: a fresh answer, one probe at a time -------------------------------------------


async def test_concurrent_gates_probe_once_and_the_page_sees_it(
    gateways: dict[str, Gateway],
) -> None:
    async with GatewayProber({"a": system("a", gateways["a"])}) as prober:
        changes: list[bool | None] = []
        prober.listeners.append(lambda: changes.append(prober.health["a"].ok))
        first, second = await asyncio.gather(prober.fresh("a", 5.0), prober.fresh("a", 5.0))
        assert first is second and first.ok
        assert gateways["a"].state.requests["library"] == 1
        assert await prober.fresh("a", 5.0) is first  # recent enough: no new request
        assert gateways["a"].state.requests["library"] == 1
        # The page's card shows the gates' probe: the same answer, not a second one.
        assert prober.health["a"].ok is True and prober.health["a"].checked_at == first.at
        assert changes == [True]


async def test_a_failed_answer_is_not_reused_by_the_gates(gateways: dict[str, Gateway]) -> None:
    async with GatewayProber({"a": system("a", gateways["a"])}) as prober:
        gateways["a"].state.set_failure(503, 1)
        failed = await prober.fresh("a", 5.0)
        assert not failed.ok and failed.error == (
            f"HEAD {gateways['a'].url}{LIBRARY_PROBE_PATH} answered 503"
        )
        # A second on (past the moment a waiter takes another caller's answer, well within
        # max_age): the gateway answers again, and the gate passes.
        prober.last["a"] = replace(failed, at=failed.at - 1.0)
        assert (await prober.fresh("a", 5.0)).ok
        assert gateways["a"].state.requests["library"] == 2


# --- drain, status, upgrade: the gateways' own counts -----------------------------------------


def stats(stats_url: str, sid: str = "a") -> SystemConfig:
    return SystemConfig(
        id=sid, gateway="http://gw:1", public_url="https://x.example.com", stats_url=stats_url
    )


async def count(configured: SystemConfig, timeout: float = 2.0) -> tuple[int | None, str]:
    """A one-shot count, as `drain-wait` and the offline gate of a CLI process read it."""
    async with GatewayProber({configured.id: configured}, timeout=timeout) as prober:
        return await prober.gateway_count(configured.id, max_age=0.0)


async def test_probe_counts_open_sessions(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    for _ in range(3):
        async with http.post(gateway.url + SESSION_PATH, json=SESSION_BODY) as resp:
            assert resp.status == 200
            sid = (await resp.json())["sessionid"]
    assert await count(stats(gateway.url + "/stats")) == (3, "")
    async with http.delete(f"{gateway.url}/gateway/sessions/session/id/{sid}") as resp:
        assert resp.status == 204
    assert await count(stats(gateway.url + "/stats")) == (2, "")


async def test_probe_without_stats_url(gateway: Gateway) -> None:
    assert await count(stats("")) == (None, "")
    assert sum(gateway.state.requests.values()) == 0


async def test_probe_error_status(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    assert await count(stats(gateway.url + "/nope")) == (
        None,
        f"GET {gateway.url}/nope answered 404",
    )
    async with http.post(gateway.url + "/_sim/fail", json={"status": 503, "count": 1}) as resp:
        assert resp.status == 200
    assert await count(stats(gateway.url + "/stats")) == (
        None,
        f"GET {gateway.url}/stats answered 503",
    )


async def test_probe_answer_without_count(gateway: Gateway) -> None:
    assert await count(stats(gateway.url + "/gateway/adapter.js")) == (
        None,
        "stats_url answer is not JSON",
    )
    assert await count(stats(gateway.url + "/status.json")) == (
        None,
        "stats_url answer has no open_sessions count",
    )


async def test_probe_reads_a_json_pointer_and_a_prometheus_gauge(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """The count where operators' monitoring has it: a nested JSON page, Prometheus text."""
    nested = replace(stats(gateway.url + "/status.json"), stats_count="/gateway/sessions/open")
    gauge = replace(
        stats(gateway.url + "/metrics"),
        stats_format="prometheus",
        stats_metric='fcsdk_sessions{state="open"}',
    )
    for _ in range(3):
        async with http.post(gateway.url + SESSION_PATH, json=SESSION_BODY) as resp:
            assert resp.status == 200
    assert await count(nested) == (3, "")
    assert await count(gauge) == (3, "")
    missing = replace(gauge, stats_metric='fcsdk_sessions{state="lost"}')
    assert await count(missing) == (
        None,
        'stats_url answer has no sample fcsdk_sessions{state="lost"} (stats_metric)',
    )
    found, error = await count(replace(nested, stats_count="/gateway/sessions"))
    assert found is None and error.startswith("stats_url answer has {")


async def test_probe_unreachable() -> None:
    found, error = await count(stats(f"http://{HOST}:{free_port()}/stats"))
    assert found is None
    assert error.startswith("cannot connect: ")


async def test_probe_slow_gateway_times_out(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.post(gateway.url + "/_sim/slow", json={"delay": 0.6}) as resp:
        assert resp.status == 200
    assert await count(stats(gateway.url + "/stats"), timeout=0.1) == (
        None,
        "no answer within 0.1 s",
    )


async def test_gateway_counts_of_the_stats_url_systems(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(gateway.url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 200
    systems = {
        "a": stats(gateway.url + "/stats", "a"),
        "b": stats("", "b"),  # no stats_url: not probed
        "c": stats(f"http://{HOST}:{free_port()}/stats", "c"),
    }
    async with GatewayProber(systems, timeout=10.0) as prober:
        results = await prober.gateway_counts(max_age=0.0)
        assert set(results) == {"a", "c"}
        assert results["a"] == (1, "")
        assert results["c"][0] is None and results["c"][1].startswith("cannot connect: ")
        # A count no older than asked is read again, not probed again.
        stats_requests = gateway.state.requests["stats"]
        assert await prober.gateway_counts(max_age=60.0) == results
        assert gateway.state.requests["stats"] == stats_requests
    async with GatewayProber({"b": stats("", "b")}) as prober:
        assert await prober.gateway_counts() == {}
