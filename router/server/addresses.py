"""The proxy and admin listeners must never share a socket address.

Comparing the configured strings is not enough: `127.0.0.1:P` and `localhost:P` name the same
socket, and with `--workers N` (SO_REUSEPORT) both applications would bind it and the kernel
would split requests between them, putting the admin API on the proxy port. So the hosts are
resolved as the listeners will resolve them, and any overlap on a port is refused at start
(exit 2). A wildcard address (`0.0.0.0`, `::`) covers every address of its family on that port;
`::` also covers IPv4 where the system maps it (dual stack), so it is treated as covering both.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from router.config import check_listen
from router.errors import ConfigError

Address = tuple[str, int]  # (numeric host, port)


def resolve(key: str, value: str) -> set[Address]:
    """Every (address, port) the listener `value` binds, as a ConfigError naming `key`."""
    host, port = check_listen(key, value)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(key, f"cannot resolve {host!r}: {exc}") from None
    return {(str(ipaddress.ip_address(str(info[4][0]).partition("%")[0])), port) for info in infos}


def _covers(a: str, b: str) -> bool:
    ip_a, ip_b = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if ip_a == ip_b:
        return True
    if ip_a.is_unspecified:
        return ip_a.version == ip_b.version or ip_a.version == 6
    return False


def overlap(proxy: Iterable[Address], admin: Iterable[Address]) -> Address | None:
    """The first admin address that lands on a proxy socket, or None.

    Port 0 asks the kernel for a free port, which can never collide.
    """
    proxy = list(proxy)
    for host, port in admin:
        if port == 0:
            continue
        for other, other_port in proxy:
            if other_port == port and (_covers(other, host) or _covers(host, other)):
                return host, port
    return None


def check_distinct_listeners(listen: str, admin_listen: str) -> None:
    """Raise ConfigError (exit 2) when `admin_listen` resolves onto `listen`'s socket."""
    clash = overlap(resolve("router.listen", listen), resolve("router.admin_listen", admin_listen))
    if clash is not None:
        host, port = clash
        raise ConfigError(
            "router.admin_listen",
            f"{admin_listen!r} resolves to {host} port {port}, which router.listen"
            f" ({listen!r}) also binds: the admin listener must never share the proxy's port",
        )
