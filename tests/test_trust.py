"""trusted_networks as plain data: which peer may mint tokens."""

from __future__ import annotations

import pytest

from router.errors import ConfigError
from router.trust import TrustedNetworks, address_in, parse_networks


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("172.32.0.9", False),
        ("192.168.7.7", True),
        ("fd12::1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("8.8.8.8", False),
        ("2001:db8::1", False),
        ("", False),
        ("not-an-address", False),
    ],
)
def test_default_trusts_loopback_and_private_ranges(address: str, trusted: bool) -> None:
    assert (address in TrustedNetworks(())) is trusted


def test_configured_networks_replace_the_default() -> None:
    trusted = TrustedNetworks(["10.20.0.0/16", "192.0.2.7"])
    assert "10.20.1.1" in trusted and "192.0.2.7" in trusted
    assert "127.0.0.1" not in trusted and "10.21.0.1" not in trusted
    assert None not in trusted
    # The per-address cache gives the same answers.
    assert "10.20.1.1" in trusted and "127.0.0.1" not in trusted


def test_a_bad_network_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_networks("router.trusted_networks", ["10.0.0.0/33"])
    assert caught.value.key == "router.trusted_networks"
    assert not address_in("10.0.0.1", parse_networks("k", ["192.168.0.0/16"]))
