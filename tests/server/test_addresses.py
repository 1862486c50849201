"""The listener-overlap check: admin_listen never resolves onto the proxy's socket."""

from __future__ import annotations

import pytest

from router.errors import ConfigError
from router.server.addresses import check_distinct_listeners, overlap, resolve


@pytest.mark.parametrize(
    ("proxy", "admin", "clash"),
    [
        ([("127.0.0.1", 8080)], [("127.0.0.1", 8080)], True),
        ([("127.0.0.1", 8080)], [("127.0.0.1", 8081)], False),
        ([("0.0.0.0", 8080)], [("127.0.0.1", 8080)], True),
        ([("127.0.0.1", 8080)], [("0.0.0.0", 8080)], True),
        ([("::", 8080)], [("127.0.0.1", 8080)], True),
        ([("::1", 8080)], [("127.0.0.1", 8080)], False),
        ([("127.0.0.1", 0)], [("127.0.0.1", 0)], False),
    ],
)
def test_overlap_compares_addresses_and_ports(
    proxy: list[tuple[str, int]], admin: list[tuple[str, int]], clash: bool
) -> None:
    assert (overlap(proxy, admin) is not None) is clash


def test_localhost_resolves_onto_the_loopback_listener() -> None:
    assert ("127.0.0.1", 9999) in resolve("router.admin_listen", "localhost:9999")
    with pytest.raises(ConfigError) as caught:
        check_distinct_listeners("127.0.0.1:9999", "localhost:9999")
    assert caught.value.key == "router.admin_listen"
    check_distinct_listeners("127.0.0.1:9999", "localhost:9998")
    check_distinct_listeners("127.0.0.1:0", "localhost:0")
    with pytest.raises(ConfigError) as unresolvable:
        check_distinct_listeners("127.0.0.1:1", "no-such-host.invalid:2")
    assert unresolvable.value.key == "router.admin_listen"
