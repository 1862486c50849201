"""The hop to a gateway: one keep-alive ClientSession per system, header hygiene, errors.

Header functions and the exception mapping are pure and unit-tested; `Upstream.send` is the
only place that touches the socket.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from router.config import SystemConfig
from router.errors import (
    Overloaded,
    RequestError,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from router.proxy.http1 import (
    AnswerBudget,
    AnswerTooLarge,
    ClosedEarly,
    ConnectFailed,
    GatewayError,
    GatewayPool,
    OverBudget,
    encode_request,
)
from router.systems.tls import gateway_ssl

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


def _tokens(connection_values: Iterable[str]) -> set[str]:
    """Headers named in `Connection` are hop-by-hop too (RFC 9110 section 7.6.1)."""
    tokens: set[str] = set()
    for value in connection_values:
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    return _tokens(headers.getall("Connection", []))


def _quoted(value: str) -> str:
    """A Forwarded parameter value (RFC 7239): a quoted-string, escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwarded_element(peer: str, scheme: str, host: str) -> str:
    """This hop as one RFC 7239 `Forwarded` element: who called, over what, for which host."""
    node = f'"[{peer}]"' if ":" in peer else (peer or "unknown")
    return f"for={node};proto={scheme};host={_quoted(host)}"


def request_headers(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    peer: str,
    scheme: str,
    host: str,
    drop: frozenset[str] = frozenset(),
    trusted: bool = True,
) -> CIMultiDict[str]:
    """Headers to send upstream: hop-by-hop and `drop` removed, X-Forwarded-* and Forwarded
    set from what the router knows.

    From a `trusted` peer (router.trusted_networks: the web app's back end, which may sit
    behind its own proxy) X-Forwarded-For and Forwarded are appended to; from any other
    peer what it claimed is dropped and only this hop is told, so a browser cannot put an
    address of its choosing before the gateway. -Proto and -Host describe the hop into the
    router, whoever sent them.
    """
    strip = _REQUEST_DROP | _connection_tokens(incoming) | drop
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        if name.lower() not in strip:
            out.add(name, value)
    previous = out.popall("X-Forwarded-For", [])
    chain = out.popall("Forwarded", [])
    if not trusted:
        previous, chain = [], []
    out["X-Forwarded-For"] = ", ".join([*previous, peer]) if previous else peer
    out["X-Forwarded-Proto"] = scheme
    out["X-Forwarded-Host"] = host
    out["Forwarded"] = ", ".join([*chain, forwarded_element(peer, scheme, host)])
    return out


def _hop_cleaned(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """An answer's headers without the hop-by-hop and per-hop ones, order kept."""
    strip = _RESPONSE_DROP | _tokens(v for n, v in headers if n.lower() == "connection")
    return [(name, value) for name, value in headers if name.lower() not in strip]


def response_headers(upstream: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """Headers to return to the client: hop-by-hop and per-hop headers removed."""
    return CIMultiDict(_hop_cleaned(list(upstream.items())))


def map_upstream_error(
    exc: BaseException, system: str, read_timeout: float, max_response_size: int = 0
) -> RequestError:
    """The one mapping of a failed hop to a gateway, by the type of the failure, to the JSON
    error the client gets: our pool's (http1.py) and aiohttp's (the release fetch) alike."""
    in_time = f"could not connect to system {system!r} in time"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamUnavailable(in_time, system=system)
    if isinstance(exc, ConnectFailed):
        if exc.timed_out:
            return UpstreamUnavailable(in_time, system=system)
        return UpstreamUnavailable(
            f"cannot connect to system {system!r}: {exc.reason}", system=system
        )
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(
            f"system {system!r} did not answer within {read_timeout:g} s", system=system
        )
    if isinstance(exc, OverBudget):
        # Never retried: it is this worker that has no room, not the gateway failing.
        return Overloaded(
            f"this router worker already holds its budget of gateway answers"
            f" ({exc.limit} bytes, router.answer_budget): try again shortly",
            system=system,
        )
    if isinstance(exc, AnswerTooLarge):
        return UpstreamTooLarge(
            f"system {system!r} answered with more than {max_response_size} bytes"
            " (router.max_response_size)",
            system=system,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(
            f"cannot connect to system {system!r}: {exc.os_error.strerror or exc}", system=system
        )
    if isinstance(exc, ClosedEarly | aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable(
            f"system {system!r} closed the connection without answering", system=system
        )
    if isinstance(exc, GatewayError):
        return UpstreamUnavailable(f"system {system!r} failed: {exc}", system=system)
    return UpstreamUnavailable(f"system {system!r} failed: {exc.__class__.__name__}", system=system)


def may_retry(sent: bool, idempotent: bool) -> bool:
    """May a request whose connection broke be sent a second (and last) time?

    Only when the first attempt provably never reached the gateway (`sent` false: the
    kept-alive connection was found closed when the request was to be written), or when the
    route is idempotent (sending it twice does what sending it once does). Connect failures
    (the gateway is down: asking again at once only doubles the load on it) and timeouts (the
    gateway may still be working on it) never come here.
    """
    return not sent or idempotent


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    held: int = 0  # bytes of the worker's AnswerBudget this answer holds (proxy gives back)


def pool_ssl(system: SystemConfig) -> ssl.SSLContext | None:
    """`gateway_ssl` as an `ssl=` value for asyncio's create_connection (None: plain TCP)."""
    policy = gateway_ssl(system)
    if not system.gateway.startswith("https"):
        return None
    if isinstance(policy, ssl.SSLContext):
        return policy
    context = ssl.create_default_context()
    if policy is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def answer_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header list from the parser -> the headers returned to the client (hop-cleaned), as
    `response_headers` gives them, but as a list: no multidict is built here, web.Response
    builds the one it sends (on every proxied answer's path)."""
    return _hop_cleaned(
        [
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            for name, value in raw
        ]
    )


class Upstream:
    """The connections to one system's gateway: the token hop's lean pool (router/proxy/http1.py)
    for proxied requests, and an aiohttp session for the release checks."""

    def __init__(
        self,
        system: SystemConfig,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_response_size: int = 16_777_216,
        budget: AnswerBudget | None = None,
    ) -> None:
        self.system = system
        self.budget = budget
        self.base = system.gateway.rstrip("/")
        self.read_timeout = read_timeout
        self.max_response_size = max_response_size
        parts = urlsplit(self.base)
        secure = parts.scheme == "https"
        self.host_header = parts.netloc.rpartition("@")[2]
        self.base_path = parts.path
        self.pool = GatewayPool(
            parts.hostname or "",
            parts.port or (443 if secure else 80),
            ssl_context=pool_ssl(system),
            limit=system.max_connections,
            connect_timeout=connect_timeout,
            max_answer=max_response_size,
            budget=budget,
        )
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
            # No `sock_read`: aiohttp 3.14 can leave that timer armed on a connection it has
            # already put back in the pool (docs/upstream.md, "The lost request"); when it
            # fires there, the next request on the connection fails at once although it
            # reached the gateway. The read timeout is our own deadline in `send` instead.
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=None),
            auto_decompress=False,
            # One pool serves every caller: a cookie one caller's answer set must never ride
            # along on another caller's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Content-Type"),
            raise_for_status=False,
        )

    async def close(self) -> None:
        await self.pool.close()
        await self.session.close()

    async def send(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | None,
        *,
        idempotent: bool = False,
    ) -> UpstreamAnswer:
        """One request, one answer read in full, within `read_timeout` seconds.

        At most two attempts: the second only when `may_retry` says the first never reached
        the gateway, or the route is `idempotent` (the caller knows the route: a PUT that
        creates a short code is not, a DELETE of a session is). `path_qs` is origin-form: the
        handler refused any other request target before it classified the request
        (`routing.check_origin_form`, issue 12), and `routing.upstream_target` builds it.
        """
        request = encode_request(method, self.base_path + path_qs, self.host_header, headers, body)
        sid = self.system.id
        fresh = False
        for attempt in (1, 2):
            try:
                answer = await self.pool.request(
                    request, method, read_timeout=self.read_timeout, fresh=fresh
                )
                return UpstreamAnswer(
                    answer.status, answer_headers(answer.headers), answer.body, answer.held
                )
            except (TimeoutError, ConnectFailed, OverBudget, AnswerTooLarge) as exc:
                # Never retried: a timeout may still be at work on the gateway, a gateway
                # that is down gets no second knock at once, the same gateway would send the
                # same too-large answer, and a full budget is this worker's, not the gateway's.
                raise self._error(exc) from None
            except GatewayError as exc:
                # Never written: provably never reached the gateway, any route may go again.
                # Written: only an idempotent route may (the gateway may have acted on it).
                if attempt == 1 and may_retry(exc.sent, idempotent):
                    log.info(
                        "%s %s to system %s: %s; sending it once more", method, path_qs, sid, exc
                    )
                    fresh = True
                    continue
                raise self._error(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, exc: BaseException) -> RequestError:
        return map_upstream_error(exc, self.system.id, self.read_timeout, self.max_response_size)
