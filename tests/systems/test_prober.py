"""The gateway health prober against real simulated systems on sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from router.config import SystemConfig
from router.systems.prober import LIBRARY_PROBE_PATH, HealthProber, probe_target
from tests.helpers import Gateway, wait_until


def system(sid: str, gateway: Gateway, stats: bool = False) -> SystemConfig:
    return SystemConfig(
        id=sid,
        gateway=gateway.url,
        public_url=f"https://{sid}.example.com",
        stats_url=gateway.url + "/stats" if stats else "",
    )


@pytest.fixture
async def prober(gateways: dict[str, Gateway]) -> AsyncIterator[HealthProber]:
    prober = HealthProber(
        {"a": system("a", gateways["a"]), "b": system("b", gateways["b"], stats=True)},
        interval=0.05,
        timeout=1.0,
    )
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


async def test_healthy_systems_report_latency_and_gateway_counts(
    prober: HealthProber, gateways: dict[str, Gateway]
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
    prober: HealthProber, gateways: dict[str, Gateway]
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
    prober: HealthProber, gateways: dict[str, Gateway]
) -> None:
    prober.demand()
    await wait_until(lambda: prober.health["a"].ok is True)
    await gateways["a"].stop()
    await wait_until(lambda: prober.health["a"].ok is False)
    assert prober.health["a"].last_error.startswith("cannot connect")
    assert prober.health["a"].status is None
    assert prober.health["b"].ok is True
