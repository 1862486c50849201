"""A hostile gateway on a real socket: oversized or trickled answers, and an arrival count.

The simulated system (router/simulator.py) is a well-behaved aiohttp app; a misbehaving gateway
has to be written at the byte level, so the router's client sees exactly what a broken or
malicious server sends. Every connection and every request head that arrives is counted, so a
test can assert what reached the gateway, not only what the client got back.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from tests.helpers import HOST

SMALL = b'{"sessionid": "hostile-1"}'


@dataclass
class HostileGateway:
    """`mode`: "ok" (a small JSON answer), "big" (`size` bytes with a Content-Length),
    "chunked" (`size` bytes, chunked, no length), "trickle" (one byte every `every` s) or
    "hold" (a head declaring `size` bytes, the body only once `go` is set)."""

    mode: str = "ok"
    size: int = 0
    every: float = 0.2
    connections: int = 0
    requests: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)  # every request head as it arrived
    server: asyncio.Server | None = None
    go: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://{HOST}:{port}"

    async def start(self) -> HostileGateway:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self._writers):
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                self.requests.append(lines[0])
                self.heads.append(head.decode("latin-1"))
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                await self._answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        json = b"Content-Type: application/json\r\n"
        if self.mode == "big":
            writer.write(b"HTTP/1.1 200 OK\r\n" + json + b"Content-Length: %d\r\n\r\n" % self.size)
            writer.write(b"x" * self.size)
        elif self.mode == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\n" + json + b"Transfer-Encoding: chunked\r\n\r\n")
            piece = 4096
            for start in range(0, self.size, piece):
                chunk = b"x" * min(piece, self.size - start)
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif self.mode == "hold":
            writer.write(b"HTTP/1.1 200 OK\r\n" + json + b"Content-Length: %d\r\n\r\n" % self.size)
            await writer.drain()
            await self.go.wait()
            writer.write(b"x" * self.size)
        elif self.mode == "trickle":
            writer.write(b"HTTP/1.1 200 OK\r\n" + json + b"Content-Length: 1000\r\n\r\n")
            for _ in range(1000):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(self.every)
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\n" + json + b"Content-Length: %d\r\n\r\n" % len(SMALL) + SMALL
            )
        await writer.drain()
