"""Who may mint tokens: `trusted_networks`, decided on the socket peer's address.

SPEC section 2 ("Token mint is back-end only"): the routes that mint or delete tokens and
short codes accept callers from `trusted_networks` only (loopback and private ranges unless
configured). The address judged is the TCP peer of the connection, never a header: an
`X-Forwarded-For` is whatever the caller wrote, so honouring it would let anyone claim
`10.0.0.1`. A balancer in front of the router therefore must either pass the client's own
address through at the TCP level (an L4 balancer) or refuse the mint routes itself
(docs/security.md).

Pure except for a small cache: the proxy asks once per mint request, and a back end calls
from a handful of addresses, so the answer for each is computed once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from router.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 1918 / 4193 private ranges plus loopback: where a web application's back end lives.
DEFAULT_TRUSTED: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
_CACHE_LIMIT = 4096


def parse_networks(key: str, values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) -> networks; a bad entry is a ConfigError naming `key`."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                key, f"{value!r} is not a network (e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)"
            ) from None
    return tuple(networks)


def address_in(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether the peer `address` (as aiohttp reports it) lies in one of `networks`.

    An IPv4-mapped IPv6 peer (`::ffff:10.1.2.3`, a dual-stack listener) is judged as the IPv4
    address it is; anything unparsable (a unix socket peer, no peer) is not trusted.
    """
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class TrustedNetworks:
    """`peer in trusted`: one dict look-up per request once an address has been seen."""

    __slots__ = ("_cache", "networks")

    def __init__(self, configured: Iterable[str], key: str = "router.trusted_networks") -> None:
        configured = tuple(configured)
        self.networks = parse_networks(key, configured or DEFAULT_TRUSTED)
        self._cache: dict[str, bool] = {}

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        known = self._cache.get(address)
        if known is None:
            known = address_in(address, self.networks)
            if len(self._cache) >= _CACHE_LIMIT:
                # Many distinct callers (a scan): start over rather than grow without bound.
                self._cache.clear()
            self._cache[address] = known
        return known

    def describe(self) -> str:
        return ", ".join(str(n) for n in self.networks)
