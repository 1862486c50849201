"""router/proxy/http1.py: the token hop's lean client against raw gateways on real sockets.

Each gateway here writes exact bytes, so every framing and connection case the parser and
the pool must get right is pinned down: chunked, close-delimited, `Connection: close`,
HEAD, malformed answers, idle expiry and the connection limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDict

from router.proxy.http1 import GatewayError, GatewayPool, NeverSent, encode_request
from tests.helpers import HOST

Answerer = Callable[[bytes], bytes | None]  # request head -> raw answer (None: close)


@dataclass
class RawGateway:
    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    answer: Answerer = lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    close_after: bool = False


@pytest.fixture
async def raw_gateway() -> AsyncIterator[RawGateway]:
    gateway = RawGateway()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gateway.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    head += await reader.readexactly(length)
                gateway.heads.append(head)
                raw = gateway.answer(head)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
                if gateway.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    gateway.port = server.sockets[0].getsockname()[1]
    try:
        yield gateway
    finally:
        server.close()
        await server.wait_closed()


def pool_for(gateway: RawGateway, **kwargs: Any) -> GatewayPool:
    return GatewayPool(
        HOST,
        gateway.port,
        ssl_context=None,
        limit=int(kwargs.pop("limit", 4)),
        connect_timeout=2.0,
        **kwargs,
    )


def get(path: str = "/x") -> bytes:
    return encode_request("GET", path, f"{HOST}:1", CIMultiDict(), None)


def test_encode_request() -> None:
    headers = CIMultiDict([("Content-Type", "application/json"), ("X-A", "1"), ("X-A", "2")])
    raw = encode_request("POST", "/p?q=1", "gw:8080", headers, b"{}")
    assert raw == (
        b"POST /p?q=1 HTTP/1.1\r\nHost: gw:8080\r\nContent-Type: application/json\r\n"
        b"X-A: 1\r\nX-A: 2\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert b"Content-Length: 0\r\n" in encode_request("PUT", "/", "h", CIMultiDict(), None)
    assert b"Content-Length" not in encode_request("GET", "/", "h", CIMultiDict(), None)


async def test_keep_alive_reuses_one_connection(raw_gateway: RawGateway) -> None:
    pool = pool_for(raw_gateway)
    for _ in range(3):
        answer = await pool.request(get(), "GET", read_timeout=5)
        assert (answer.status, answer.body) == (200, b"ok")
    assert raw_gateway.connections == 1
    await pool.close()


async def test_chunked_answer(raw_gateway: RawGateway) -> None:
    raw_gateway.answer = lambda head: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Y: z\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    pool = pool_for(raw_gateway)
    answer = await pool.request(get(), "GET", read_timeout=5)
    assert answer.body == b"abcdefg"
    assert (b"X-Y", b"z") in answer.headers
    assert (await pool.request(get(), "GET", read_timeout=5)).body == b"abcdefg"
    assert raw_gateway.connections == 1
    await pool.close()


async def test_close_delimited_answer_and_connection_close(raw_gateway: RawGateway) -> None:
    raw_gateway.answer = lambda head: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    raw_gateway.close_after = True
    pool = pool_for(raw_gateway)
    assert (await pool.request(get(), "GET", read_timeout=5)).body == b"all of it"
    assert (await pool.request(get(), "GET", read_timeout=5)).body == b"all of it"
    assert raw_gateway.connections == 2  # never reused after Connection: close
    await pool.close()


async def test_head_answer_has_no_body(raw_gateway: RawGateway) -> None:
    raw_gateway.answer = lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    pool = pool_for(raw_gateway)
    head = encode_request("HEAD", "/lib.js", "h", CIMultiDict(), None)
    answer = await asyncio.wait_for(pool.request(head, "HEAD", read_timeout=5), 5)
    assert answer.status == 200 and answer.body == b""
    await pool.close()


async def test_gateway_closing_without_answer_says_it_was_sent(raw_gateway: RawGateway) -> None:
    raw_gateway.answer = lambda head: None
    pool = pool_for(raw_gateway)
    with pytest.raises(GatewayError) as info:
        await pool.request(get(), "GET", read_timeout=5)
    assert info.value.sent and not isinstance(info.value, NeverSent)
    assert "closed the connection" in str(info.value)
    await pool.close()


async def test_malformed_answer_is_an_error(raw_gateway: RawGateway) -> None:
    raw_gateway.answer = lambda head: b"HTTP/1.1 OK OK\r\nnonsense\r\n\r\n"
    pool = pool_for(raw_gateway)
    with pytest.raises(GatewayError) as info:
        await pool.request(get(), "GET", read_timeout=5)
    assert "malformed" in str(info.value)
    await pool.close()


async def test_idle_connections_expire(raw_gateway: RawGateway) -> None:
    pool = pool_for(raw_gateway, keepalive=0.05)
    await pool.request(get(), "GET", read_timeout=5)
    await asyncio.sleep(0.1)  # the stimulus: idle past the pool's keep-alive
    await pool.request(get(), "GET", read_timeout=5)
    assert raw_gateway.connections == 2
    await pool.close()


async def test_limit_makes_requests_wait(raw_gateway: RawGateway) -> None:
    pool = pool_for(raw_gateway, limit=2)
    answers = await asyncio.gather(
        *(pool.request(get(f"/{i}"), "GET", read_timeout=5) for i in range(10))
    )
    assert all(a.status == 200 for a in answers)
    assert raw_gateway.connections <= 2
    assert len(raw_gateway.heads) == 10
    await pool.close()


async def test_connect_failure() -> None:
    from tests.helpers import free_port

    pool = GatewayPool(HOST, free_port(), ssl_context=None, limit=1, connect_timeout=2.0)
    with pytest.raises(GatewayError) as info:
        await pool.request(get(), "GET", read_timeout=5)
    assert not info.value.sent and "cannot connect" in str(info.value)


async def test_waiting_for_a_connection_is_not_read_time() -> None:
    """read_timeout bounds the exchange, not the queue for a connection (limit 1 here)."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(0.2)  # the gateway's own time per answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(slow, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    pool = GatewayPool(HOST, port, ssl_context=None, limit=1, connect_timeout=5.0)
    try:
        answers = await asyncio.gather(
            *(pool.request(get(), "GET", read_timeout=0.5) for _ in range(4))
        )  # the last one queues ~0.6 s, longer than its read timeout
        assert [a.status for a in answers] == [200] * 4
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
