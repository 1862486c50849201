"""router/responses.py: large bodies written apart from their headers, on a real socket.

aiohttp holds a response's headers back and joins them to the body in one new bytes object;
`SeparateBody` flushes them when the response is prepared, so the body is written as it is.
The tests read the wire: the headers arrive while the body has not been written yet, and the
whole answer (GET and HEAD) is exactly what a plain Response would have sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from router.responses import SEPARATE_BODY_FROM, SeparateBody, body_response
from tests.helpers import HOST

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[int]]
BIG = bytes(range(256)) * (SEPARATE_BODY_FROM // 256 + 7)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.ServerRunner] = []

    async def start(handler: Handler) -> int:
        runner = web.ServerRunner(web.Server(handler), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        runners.append(runner)
        return runner.addresses[0][1]  # type: ignore[no-any-return]

    yield start
    for runner in runners:
        await runner.cleanup()


async def exchange(port: int, method: str = "GET") -> tuple[bytes, bytes]:
    """One request; the answer's head and its body (read to Content-Length)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"{method} /f HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(_header(head, b"content-length"))
        body = b"" if method == "HEAD" else await reader.readexactly(length)
        return head, body
    finally:
        writer.close()


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} in {head!r}")


def test_only_large_bodies_take_the_separate_path() -> None:
    assert type(body_response(b"x" * (SEPARATE_BODY_FROM - 1))) is web.Response
    assert isinstance(body_response(BIG), SeparateBody)
    answer = body_response(BIG, [("X-A", "1")], status=203)
    assert answer.status == 203 and answer.headers["X-A"] == "1"


async def test_the_headers_are_on_the_wire_before_the_body_is_written(serve: Serve) -> None:
    """Prepared, not yet finished: the client can already read the head. A plain Response
    would hold it back until the body is written (the join this avoids)."""
    head_seen = asyncio.Event()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        response = body_response(BIG, {"Content-Type": "application/javascript"})
        await response.prepare(request)
        await asyncio.wait_for(head_seen.wait(), 10)
        return response

    port = await serve(handler)
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        head_seen.set()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert int(_header(head, b"content-length")) == len(BIG)
        assert await asyncio.wait_for(reader.readexactly(len(BIG)), 10) == BIG
    finally:
        writer.close()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_the_answer_is_what_a_plain_response_sends(serve: Serve, method: str) -> None:
    headers = {"Content-Type": "application/javascript", "ETag": '"abc"'}
    separate = await serve(lambda request: _answer(body_response(BIG, headers)))
    plain = await serve(lambda request: _answer(web.Response(body=BIG, headers=headers)))
    got, want = await exchange(separate, method), await exchange(plain, method)
    strip = {b"date"}
    assert [h for h in got[0].split(b"\r\n") if h.split(b":")[0].lower() not in strip] == [
        h for h in want[0].split(b"\r\n") if h.split(b":")[0].lower() not in strip
    ]
    assert got[1] == want[1] == (b"" if method == "HEAD" else BIG)


async def _answer(response: web.StreamResponse) -> web.StreamResponse:
    return response
