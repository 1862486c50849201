"""The hop to a gateway: one keep-alive ClientSession per system, header hygiene, errors.

Header functions and the exception mapping are pure and unit-tested; `Upstream.send` is the
only place that touches the socket.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from router.config import SystemConfig
from router.errors import RequestError, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("router.upstream")

# RFC 9110 section 7.6.1: connection-specific headers never cross a proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed for the body we actually send, or set per hop.
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "date", "server"}


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Headers named in `Connection` are hop-by-hop too (RFC 9110 section 7.6.1)."""
    tokens: set[str] = set()
    for value in headers.getall("Connection", []):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def request_headers(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    peer: str,
    scheme: str,
    host: str,
    drop: frozenset[str] = frozenset(),
) -> CIMultiDict[str]:
    """Headers to send upstream: hop-by-hop and `drop` removed, X-Forwarded-* set.

    X-Forwarded-For is appended to (the web app's back end may sit behind its own proxy);
    -Proto and -Host describe the hop into the router.
    """
    strip = _REQUEST_DROP | _connection_tokens(incoming) | drop
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        if name.lower() not in strip:
            out.add(name, value)
    previous = out.popall("X-Forwarded-For", [])
    out["X-Forwarded-For"] = ", ".join([*previous, peer]) if previous else peer
    out["X-Forwarded-Proto"] = scheme
    out["X-Forwarded-Host"] = host
    return out


def response_headers(upstream: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """Headers to return to the client: hop-by-hop and per-hop headers removed."""
    strip = _RESPONSE_DROP | _connection_tokens(upstream)
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in strip)


def map_client_error(exc: BaseException, system: str, cfg_read: float) -> RequestError:
    """Turn an aiohttp/asyncio client failure into the JSON error the client gets."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamUnavailable(f"could not connect to system {system!r} in time", system=system)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(
            f"system {system!r} did not answer within {cfg_read:g} s", system=system
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(
            f"cannot connect to system {system!r}: {exc.os_error.strerror or exc}", system=system
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable(
            f"system {system!r} closed the connection without answering", system=system
        )
    return UpstreamUnavailable(f"system {system!r} failed: {exc.__class__.__name__}", system=system)


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    status: int
    headers: CIMultiDict[str]
    body: bytes


def gateway_ssl(system: SystemConfig) -> ssl.SSLContext | bool:
    """The certificate policy for a system's gateway: aiohttp's `ssl=` value.

    Verified by default; against a private CA with `ca_file`; unchecked only with
    `tls_verify = false`. Used by the proxy's pool and by the health prober alike.
    """
    if not system.gateway.startswith("https"):
        return True
    if not system.tls_verify:
        return False
    if system.ca_file:
        return ssl.create_default_context(cafile=system.ca_file)
    return True


class Upstream:
    """The connection pool to one system's gateway."""

    def __init__(
        self, system: SystemConfig, *, connect_timeout: float, read_timeout: float
    ) -> None:
        self.system = system
        self.base = system.gateway.rstrip("/")
        self.read_timeout = read_timeout
        ssl_context = gateway_ssl(system)
        if ssl_context is False:
            log.warning(
                "systems.%s.tls_verify = false: the gateway's certificate is NOT checked",
                system.id,
            )
        connector = aiohttp.TCPConnector(
            limit=system.max_connections,
            ssl=ssl_context,
            # Keep idle connections for less time than gateways do (aiohttp's server: 75 s),
            # so it is us who close an idle one, never a request racing a server-side close.
            keepalive_timeout=15.0,
            ttl_dns_cache=60,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_read=read_timeout
            ),
            auto_decompress=False,
            # One pool serves every caller: a cookie one caller's answer set must never ride
            # along on another caller's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Content-Type"),
            raise_for_status=False,
        )

    async def close(self) -> None:
        await self.session.close()

    async def send(
        self, method: str, path_qs: str, headers: CIMultiDict[str], body: bytes | None
    ) -> UpstreamAnswer:
        """One request, one answer read in full.

        A request that got no answer because its kept-alive connection turned out closed is
        sent once more on a fresh connection, whatever the method. For a POST that is safe
        here: if the gateway did create a session before the connection dropped, nobody can
        ever learn its token, so a second attempt adds no orphan that giving up would not
        leave too, and the caller gets a token instead of a 502.
        """
        url = self.base + path_qs
        attempts = 2
        for attempt in range(attempts):
            try:
                async with self.session.request(
                    method, url, headers=headers, data=body, allow_redirects=False
                ) as resp:
                    payload = await resp.read()
                    return UpstreamAnswer(resp.status, response_headers(resp.headers), payload)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt + 1 < attempts and not isinstance(exc, aiohttp.ClientConnectorError):
                    continue
                raise map_client_error(exc, self.system.id, self.read_timeout) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise map_client_error(exc, self.system.id, self.read_timeout) from exc
        raise AssertionError("unreachable")  # pragma: no cover
