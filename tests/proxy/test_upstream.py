"""router/proxy/upstream.py: header hygiene and error mapping (pure), and `Upstream.send` against a
simulated gateway on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
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
    OverBudget,
)
from router.proxy.upstream import (
    HOP_BY_HOP,
    Upstream,
    UpstreamAnswer,
    answer_headers,
    map_upstream_error,
    request_headers,
    response_headers,
)
from tests.helpers import HOST, SESSION_BODY, SESSION_PATH, Gateway, free_port, start_gateway

# --- request_headers ------------------------------------------------------------------------


def incoming(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def forward(headers: CIMultiDictProxy[str], **kwargs: Any) -> CIMultiDict[str]:
    return request_headers(
        headers, peer="10.0.0.7", scheme="https", host="router.internal", **kwargs
    )


def test_request_keeps_end_to_end_headers() -> None:
    out = forward(
        incoming(
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("Accept", "text/plain"),
            ("Authorization", "Bearer x"),
            ("Cookie", "a=1"),
            ("X-Custom", "kept"),
        )
    )
    assert out["Content-Type"] == "application/json"
    assert out.getall("Accept") == ["application/json", "text/plain"]
    assert out["Authorization"] == "Bearer x"
    assert out["Cookie"] == "a=1"
    assert out["X-Custom"] == "kept"


@pytest.mark.parametrize(
    "name",
    sorted(HOP_BY_HOP | {"host", "content-length", "expect"}),
)
def test_request_strips_hop_by_hop(name: str) -> None:
    out = forward(incoming((name.title(), "x"), ("X-Kept", "1")))
    assert name not in out
    assert out["X-Kept"] == "1"


def test_request_strips_headers_named_in_connection() -> None:
    out = forward(
        incoming(
            ("Connection", "keep-alive, X-Hop-One"),
            ("Connection", " x-hop-two ,"),
            ("X-Hop-One", "secret"),
            ("x-hop-two", "secret"),
            ("X-Kept", "1"),
        )
    )
    assert "X-Hop-One" not in out and "X-Hop-Two" not in out and "Connection" not in out
    assert out["X-Kept"] == "1"


def test_request_drop_is_case_insensitive_on_header_names() -> None:
    out = forward(
        incoming(("X-Token-Router-Preview", "b:secret"), ("X-Kept", "1")),
        drop=frozenset({"x-token-router-preview"}),
    )
    assert "X-Token-Router-Preview" not in out
    assert out["X-Kept"] == "1"


def test_forwarded_for_set() -> None:
    out = forward(incoming())
    assert out["X-Forwarded-For"] == "10.0.0.7"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Host"] == "router.internal"


def test_forwarded_for_appended() -> None:
    out = forward(incoming(("X-Forwarded-For", "203.0.113.9")))
    assert out.getall("X-Forwarded-For") == ["203.0.113.9, 10.0.0.7"]


def test_forwarded_for_several_headers_joined_in_order() -> None:
    out = forward(
        incoming(("X-Forwarded-For", "203.0.113.9, 198.51.100.1"), ("x-forwarded-for", "192.0.2.4"))
    )
    assert out.getall("X-Forwarded-For") == ["203.0.113.9, 198.51.100.1, 192.0.2.4, 10.0.0.7"]


def test_forwarded_proto_and_host_replaced_not_trusted() -> None:
    out = forward(incoming(("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "evil.example.com")))
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == ["router.internal"]


def test_request_headers_does_not_modify_input() -> None:
    original = CIMultiDict([("Connection", "close"), ("X-Forwarded-For", "1.2.3.4")])
    forward(CIMultiDictProxy(original))
    assert list(original.items()) == [("Connection", "close"), ("X-Forwarded-For", "1.2.3.4")]


# --- response_headers -----------------------------------------------------------------------


def test_response_headers() -> None:
    out = response_headers(
        incoming(
            ("Content-Type", "application/json"),
            ("Content-Length", "12"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "keep-alive, X-Internal"),
            ("Keep-Alive", "timeout=5"),
            ("X-Internal", "hop"),
            ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("Server", "gw/1.0"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Cache-Control", "no-cache"),
            ("X-Sim-System", "a"),
            ("Upgrade", "websocket"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authenticate", "Basic"),
        )
    )
    assert list(out.items()) == [
        ("Content-Type", "application/json"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Cache-Control", "no-cache"),
        ("X-Sim-System", "a"),
    ]


def test_answer_headers_from_the_parser_clean_like_response_headers() -> None:
    pairs = [
        ("Content-Type", "application/json"),
        ("Content-Length", "12"),
        ("connection", "keep-alive, X-Internal"),
        ("X-Internal", "hop"),
        ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Caf\u00e9", "cr\u00e8me"),  # not ASCII: the bytes survive the round trip
        ("Transfer-Encoding", "chunked"),
    ]
    raw = [(n.encode("utf-8"), v.encode("utf-8")) for n, v in pairs]
    assert answer_headers(raw) == list(response_headers(incoming(*pairs)).items())
    assert [n for n, _ in answer_headers(raw)] == [
        "Content-Type",
        "Set-Cookie",
        "Set-Cookie",
        "X-Caf\u00e9",
    ]


# --- map_upstream_error -----------------------------------------------------------------------


def _mapped(exc: BaseException) -> RequestError:
    return map_upstream_error(exc, "a", 10.0)


@pytest.mark.parametrize(
    ("make", "kind", "status", "fragment"),
    [
        (lambda: aiohttp.ConnectionTimeoutError(), UpstreamUnavailable, 502, "connect"),
        (lambda: aiohttp.SocketTimeoutError(), UpstreamTimeout, 504, "10 s"),
        (lambda: aiohttp.ServerTimeoutError(), UpstreamTimeout, 504, "10 s"),
        (lambda: TimeoutError(), UpstreamTimeout, 504, "did not answer"),
        (lambda: TimeoutError(), UpstreamTimeout, 504, "did not answer"),
        (lambda: aiohttp.ServerDisconnectedError(), UpstreamUnavailable, 502, "closed"),
        (lambda: aiohttp.ClientPayloadError("bad"), UpstreamUnavailable, 502, "ClientPayloadError"),
        (lambda: aiohttp.ClientOSError(104, "reset"), UpstreamUnavailable, 502, "ClientOSError"),
        (lambda: RuntimeError("x"), UpstreamUnavailable, 502, "failed"),
        # Our pool's failures (http1.py), by type, never by their text.
        (lambda: ConnectFailed(timed_out=True), UpstreamUnavailable, 502, "connect to system"),
        (lambda: ConnectFailed("Connection refused"), UpstreamUnavailable, 502, "refused"),
        (lambda: ClosedEarly("x", sent=True), UpstreamUnavailable, 502, "closed the connection"),
        (lambda: GatewayError("malformed", sent=True), UpstreamUnavailable, 502, "malformed"),
        (lambda: AnswerTooLarge(5), UpstreamTooLarge, 502, "max_response_size"),
        (lambda: OverBudget(AnswerBudget(7)), Overloaded, 503, "answer_budget"),
    ],
    ids=[
        "connect-timeout",
        "socket-timeout",
        "server-timeout",
        "asyncio-timeout",
        "builtin-timeout",
        "disconnected",
        "payload",
        "os-error",
        "other",
        "pool-connect-timeout",
        "pool-refused",
        "pool-closed-early",
        "pool-malformed",
        "pool-too-large",
        "pool-over-budget",
    ],
)
def test_map_upstream_error(
    make: Callable[[], BaseException], kind: type[RequestError], status: int, fragment: str
) -> None:
    error = _mapped(make())
    assert type(error) is kind
    assert error.status == status
    assert error.system == "a"
    if kind is not Overloaded:  # a full budget is this worker's, whatever the system
        assert "'a'" in error.message
    assert fragment in error.message
    assert error.to_json()["system"] == "a"


def test_map_read_timeout_fraction() -> None:
    assert "0.25 s" in map_upstream_error(TimeoutError(), "b", 0.25).message


async def test_map_connector_error_from_a_real_refused_connection() -> None:
    port = free_port()  # nothing listens there
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(f"http://{HOST}:{port}/")
    error = map_upstream_error(info.value, "b", 10.0)
    assert isinstance(error, UpstreamUnavailable)
    assert error.status == 502 and error.system == "b"
    assert error.message.startswith("cannot connect to system 'b'")


# --- Upstream.send against a simulated gateway ----------------------------------------------


def system_for(url: str, sid: str = "a") -> SystemConfig:
    return SystemConfig(id=sid, gateway=url, public_url=f"https://{sid}.example.com")


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Upstream]]:
    made: list[Upstream] = []

    def make(url: str, *, read_timeout: float = 10.0, sid: str = "a") -> Upstream:
        upstream = Upstream(system_for(url, sid), connect_timeout=2.0, read_timeout=read_timeout)
        made.append(upstream)
        return upstream

    try:
        yield make
    finally:
        for upstream in made:
            await upstream.close()


def json_headers() -> CIMultiDict[str]:
    return CIMultiDict({"Content-Type": "application/json"})


async def post_session(upstream: Upstream) -> UpstreamAnswer:
    return await upstream.send("POST", SESSION_PATH, json_headers(), orjson.dumps(SESSION_BODY))


async def control(gateway: Gateway, path: str, body: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.url + path, json=body) as resp,
    ):
        assert resp.status == 200


async def test_send_token_request(gateway: Gateway, upstreams: Callable[..., Upstream]) -> None:
    upstream = upstreams(gateway.url + "/")  # a trailing slash on the base is harmless
    answer = await post_session(upstream)
    assert answer.status == 200
    body = orjson.loads(answer.body)
    assert body == {"sessionid": body["sessionid"]}
    assert body["sessionid"].startswith("a-")
    assert gateway.state.received[body["sessionid"]] == SESSION_BODY["urlSchemeDetails"]
    headers = CIMultiDict(answer.headers)
    assert headers["X-Sim-System"] == "a"
    for name in ("Content-Length", "Date", "Server", "Connection", "Keep-Alive"):
        assert name not in headers
    assert gateway.state.sessions == {body["sessionid"]}


async def test_send_query_string_and_delete(
    gateway: Gateway, upstreams: Callable[..., Upstream]
) -> None:
    upstream = upstreams(gateway.url)
    created = await upstream.send("PUT", "/assistserver/shortcode/create", CIMultiDict(), None)
    code = orjson.loads(created.body)["shortCode"]
    found = await upstream.send(
        "GET", f"/assistserver/shortcode/agent?appkey={code}", CIMultiDict(), None
    )
    assert found.status == 200 and "cid" in orjson.loads(found.body)
    missing = await upstream.send(
        "GET", "/assistserver/shortcode/agent?appkey=0000000", CIMultiDict(), None
    )
    assert missing.status == 403  # upstream answers pass through as they are
    sid = orjson.loads((await post_session(upstream)).body)["sessionid"]
    deleted = await upstream.send(
        "DELETE", f"/gateway/sessions/session/id/{sid}", CIMultiDict(), None
    )
    assert deleted.status == 204
    assert gateway.state.sessions == set()


async def test_send_library_bytes_not_decompressed(
    gateway: Gateway, upstreams: Callable[..., Upstream]
) -> None:
    upstream = upstreams(gateway.url)
    answer = await upstream.send("GET", "/gateway/adapter.js", CIMultiDict(), None)
    assert answer.status == 200
    assert answer.body == gateway.state.files["/gateway/adapter.js"][0]
    assert CIMultiDict(answer.headers)["Content-Type"] == "application/javascript"


async def test_send_upstream_500_is_an_answer(
    gateway: Gateway, upstreams: Callable[..., Upstream]
) -> None:
    upstream = upstreams(gateway.url)
    await control(gateway, "/_sim/fail", {"status": 500, "count": 1})
    answer = await post_session(upstream)
    assert answer.status == 500
    assert orjson.loads(answer.body)["error"] == "simulated_failure"
    assert (await post_session(upstream)).status == 200  # count was 1


async def test_send_slow_upstream_times_out(
    gateway: Gateway, upstreams: Callable[..., Upstream]
) -> None:
    upstream = upstreams(gateway.url, read_timeout=0.1)
    await control(gateway, "/_sim/slow", {"delay": 0.6})
    with pytest.raises(UpstreamTimeout) as info:
        await post_session(upstream)
    assert info.value.status == 504
    assert info.value.system == "a"
    assert "'a'" in info.value.message and "0.1 s" in info.value.message
    await control(gateway, "/_sim/slow", {"delay": 0})
    assert (await post_session(upstream)).status == 200  # the pool recovers


async def test_send_to_stopped_gateway(upstreams: Callable[..., Upstream]) -> None:
    gateway = await start_gateway("b", "2.0")
    upstream = upstreams(gateway.url, sid="b")
    assert (await post_session(upstream)).status == 200  # a kept-alive connection exists
    await gateway.stop()
    for method in ("POST", "GET"):  # neither is sent twice: not idempotent by default
        with pytest.raises(UpstreamUnavailable) as info:
            await upstream.send(method, "/gateway/adapter.js", CIMultiDict(), None)
        assert info.value.status == 502
        assert info.value.system == "b"
        assert "'b'" in info.value.message


async def test_send_to_nothing_listening(upstreams: Callable[..., Upstream]) -> None:
    upstream = upstreams(f"http://{HOST}:{free_port()}", sid="c")
    with pytest.raises(UpstreamUnavailable) as info:
        await post_session(upstream)
    assert info.value.system == "c"
    assert info.value.to_json()["error"] == "upstream_unavailable"


async def test_https_gateway_without_verification_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    system = SystemConfig(
        id="a", gateway="https://127.0.0.1:1", public_url="https://a.example.com", tls_verify=False
    )
    upstream = Upstream(system, connect_timeout=1.0, read_timeout=1.0)
    try:
        assert "tls_verify = false" in caplog.text
    finally:
        await upstream.close()


async def test_cookies_set_for_one_caller_never_reach_another() -> None:
    """The shared upstream pool keeps no cookie jar (a gateway addressed by name)."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response({"sessionid": "x"})
        response.set_cookie("JSESSIONID", "secret-of-caller-1")
        return response

    app = web.Application()
    app.router.add_post("/gateway/sessions/session", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "localhost", 0).start()
    port = runner.addresses[0][1]
    system = SystemConfig(
        id="a", gateway=f"http://localhost:{port}", public_url="https://a.example.com"
    )
    upstream = Upstream(system, connect_timeout=2, read_timeout=2)
    try:
        for _ in range(2):
            answer = await upstream.send("POST", "/gateway/sessions/session", CIMultiDict(), b"{}")
            assert answer.status == 200
            cookie = CIMultiDict(answer.headers).get("Set-Cookie", "")
            assert "JSESSIONID" in cookie  # passed to its caller
    finally:
        await upstream.close()
        await runner.cleanup()
    assert seen == [None, None]


def test_gateway_ssl_policy_is_shared_by_pool_and_prober() -> None:
    import ssl

    from router.systems.prober import GatewayProber
    from router.systems.tls import gateway_ssl

    def system(gateway: str, **kw: object) -> SystemConfig:
        return SystemConfig(id="a", gateway=gateway, public_url="https://a.example.com", **kw)  # type: ignore[arg-type]

    assert gateway_ssl(system("http://gw:8080")) is True
    assert gateway_ssl(system("https://gw:8443")) is True
    assert gateway_ssl(system("https://gw:8443", tls_verify=False)) is False
    cafile = ssl.get_default_verify_paths().cafile
    if cafile:
        assert isinstance(gateway_ssl(system("https://gw:8443", ca_file=cafile)), ssl.SSLContext)
    prober = GatewayProber({"a": system("https://gw:8443", tls_verify=False)})
    assert prober._ssl["a"] is False  # noqa: SLF001


def test_forwarded_is_this_hop_from_an_untrusted_caller() -> None:
    spoofed = incoming(("Forwarded", "for=203.0.113.9"), ("X-Forwarded-For", "203.0.113.9"))
    out = forward(spoofed, trusted=False)
    assert out.getall("Forwarded") == ['for=10.0.0.7;proto=https;host="router.internal"']
    assert out.getall("X-Forwarded-For") == ["10.0.0.7"]


def test_forwarded_is_appended_to_from_a_trusted_caller() -> None:
    out = forward(incoming(("Forwarded", "for=203.0.113.9"), ("forwarded", "for=192.0.2.1")))
    assert out.getall("Forwarded") == [
        'for=203.0.113.9, for=192.0.2.1, for=10.0.0.7;proto=https;host="router.internal"'
    ]


def test_forwarded_quotes_ipv6_and_hosts() -> None:
    out = request_headers(
        incoming(), peer="2001:db8::1", scheme="http", host='r:80"x', trusted=False
    )
    assert out["Forwarded"] == 'for="[2001:db8::1]";proto=http;host="r:80\\"x"'
