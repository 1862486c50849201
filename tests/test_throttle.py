"""The credential throttle as plain data: per address, overall, bounded, not flushable."""

from __future__ import annotations

import pytest

from router.throttle import (
    OVERALL,
    PER_ADDRESS,
    PER_ADDRESS_PER_MINUTE,
    CredentialThrottle,
    client_key,
)


def fail_until_throttled(throttle: CredentialThrottle, address: str, now: float) -> int:
    tries = 0
    while throttle.retry_after(address, now) == 0:
        throttle.failed(address, now)
        tries += 1
        assert tries < 10_000
    return tries


def test_one_address_gets_a_few_tries_then_a_few_a_minute() -> None:
    throttle = CredentialThrottle()
    assert fail_until_throttled(throttle, "192.0.2.1", 0.0) == PER_ADDRESS
    wait = throttle.retry_after("192.0.2.1", 0.0)
    assert wait == pytest.approx(60.0 / PER_ADDRESS_PER_MINUTE)
    # One more try once a token has refilled, then throttled again.
    assert throttle.retry_after("192.0.2.1", wait) == 0.0
    throttle.failed("192.0.2.1", wait)
    assert throttle.retry_after("192.0.2.1", wait) > 0
    # Over ten minutes a single address gets about 5 + 3 x 10 tries, not hundreds.
    tries, now = 0, wait
    while now < wait + 600:
        if throttle.retry_after("192.0.2.1", now) == 0:
            throttle.failed("192.0.2.1", now)
            tries += 1
        now += 1.0
    assert tries <= PER_ADDRESS_PER_MINUTE * 10 + 1


def test_spraying_from_many_addresses_hits_the_overall_limit() -> None:
    throttle = CredentialThrottle()
    checked = 0
    for n in range(10_000):
        address = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
        if throttle.retry_after(address, 0.0) == 0:
            throttle.failed(address, 0.0)
            checked += 1
    assert checked == OVERALL
    assert len(throttle.addresses) <= OVERALL  # memory grows only with failures let through


def test_spraying_cannot_flush_a_guessers_bucket() -> None:
    throttle = CredentialThrottle(max_addresses=8, overall=1000, overall_per_minute=1000)
    fail_until_throttled(throttle, "192.0.2.66", 0.0)
    for n in range(5_000):
        address = f"198.51.{n // 256 % 256}.{n % 256}"
        if throttle.retry_after(address, 1.0) == 0:
            throttle.failed(address, 1.0)
    assert len(throttle.addresses) <= 8
    assert throttle.retry_after("192.0.2.66", 1.0) > 0


def test_a_known_operator_address_is_exempt_from_the_overall_limit_only() -> None:
    throttle = CredentialThrottle()
    throttle.succeeded("192.0.2.10", 0.0)
    for n in range(100):
        address = f"203.0.113.{n}"
        if throttle.retry_after(address, 1.0) == 0:
            throttle.failed(address, 1.0)
    assert throttle.retry_after("203.0.113.200", 1.0) > 0  # a new address waits for the pool
    assert throttle.retry_after("192.0.2.10", 1.0) == 0  # the operator's does not
    fail_until_throttled(throttle, "192.0.2.10", 2.0)  # but its own failures still count
    assert throttle.retry_after("192.0.2.10", 2.0) > 0
    # The exemption ends with the session lifetime.
    assert not throttle._is_good("192.0.2.10", throttle.good_for + 10.0)  # noqa: SLF001


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("unknown") == "unknown"
    throttle = CredentialThrottle()
    for n in range(PER_ADDRESS):
        throttle.failed(f"2001:db8::{n + 1:x}", 0.0)
    assert throttle.retry_after("2001:db8::ffff", 0.0) > 0
