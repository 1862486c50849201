"""A lean HTTP/1.1 client pool for the token hop: pre-built request bytes, llhttp parsing.

aiohttp's `ClientSession.request` was ~20% of a router worker's CPU (issue 14, py-spy):
request and response objects, header merging, cookie and trace hooks, timers, connector
bookkeeping, all per request. The hop needs none of it: one method, one origin-form target,
headers already cleaned (`upstream.request_headers`), a body in memory, an answer read in
full. Here a request is one `transport.write` of bytes built in one pass, and the answer is
parsed by `httptools` (llhttp, the parser Node.js uses) into a status, a header list and a
body. Framing (Content-Length, chunked, close-delimited) is llhttp's; so is validation.

Pool: per system, kept-alive connections reused last-in first-out (the warmest first), an idle
one closed after `keepalive` seconds (before any gateway would), at most `limit` open, the
rest wait. A connection found closed when a request is to be written proves the request
never left: `NeverSent` says so, and `Upstream.send` may then use a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from typing import cast

import httptools
from multidict import CIMultiDict

# Methods whose answer has no body whatever its headers say (RFC 9110 9.3.2).
_NO_BODY = frozenset({"HEAD"})


class GatewayError(Exception):
    """The exchange failed; `sent` says whether any byte of the request was written."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class NeverSent(GatewayError):
    """The kept-alive connection was closed before the request was written."""

    def __init__(self) -> None:
        super().__init__("kept-alive connection closed before the request was written", sent=False)


class AnswerTooLarge(GatewayError):
    """The answer is larger than the pool's `max_answer` (declared or while reading); the
    connection is closed, never reused."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes", sent=True)


class OverBudget(GatewayError):
    """Reading this answer would take the worker's gateway answers held at once past its
    budget (AnswerBudget); the connection is closed, the request never retried."""

    def __init__(self, budget: AnswerBudget) -> None:
        super().__init__(
            f"the worker already holds {budget.held} bytes of gateway answers"
            f" (budget {budget.limit})",
            sent=True,
        )
        self.limit = budget.limit


class AnswerBudget:
    """Bytes of gateway answers one worker holds at once, over every system's pool.

    `max_response_size` bounds one answer; this bounds their sum (issue 25: 40 concurrent
    16 MB answers took a worker past 1 GB). An answer takes its declared length before its
    body is read (or its bytes as they arrive when it declares none) and gives it back once
    it was written to the client (proxy.py) or failed."""

    __slots__ = ("limit", "held", "peak", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self.refused = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            self.refused += 1
            return False
        self.held += size
        self.peak = max(self.peak, self.held)
        return True

    def give_back(self, size: int) -> None:
        self.held = max(0, self.held - size)


class ConnectFailed(GatewayError):
    """No connection: `timed_out` (the gateway or a free slot not in time), else `reason`."""

    def __init__(self, reason: str = "", *, timed_out: bool = False) -> None:
        super().__init__(
            "could not connect in time" if timed_out else f"cannot connect: {reason}", sent=False
        )
        self.reason = reason
        self.timed_out = timed_out


class ClosedEarly(GatewayError):
    """The gateway closed the connection before its answer was complete."""


class Answer:
    __slots__ = ("status", "headers", "body", "held")

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, held: int = 0
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.held = held  # bytes taken from the pool's AnswerBudget, the caller gives back


class _Connection(asyncio.Protocol):
    """One kept-alive connection carrying one exchange at a time."""

    def __init__(self, pool: GatewayPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._status = 0
        self._head_done = False
        self._delimited_by_close = False
        self._no_body = False
        self._size = 0
        self._held = 0  # taken from the pool's budget for the answer being read
        self.reusable = True

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes nobody asked for: the connection is unusable
            self.reusable = False
            self._close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(GatewayError("gateway answered with a protocol upgrade", sent=True))
        except httptools.HttpParserError as exc:
            self._fail(GatewayError(f"malformed answer from the gateway: {exc}", sent=True))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self._waiter is None or self._waiter.done():
            return
        if self._head_done and self._delimited_by_close:
            self._finish()
            return
        detail = f": {exc}" if exc else ""
        self._fail(
            ClosedEarly(f"gateway closed the connection without answering{detail}", sent=True)
        )

    # --- httptools callbacks ---

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        self._head_done = True
        framed = any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self._headers
        )
        self._delimited_by_close = not framed
        limit = self.pool.max_answer
        for name, value in self._headers:
            # A declared length over the cap fails before a byte of the body is read.
            if name.lower() == b"content-length" and value.strip().isdigit():
                if int(value) > limit:
                    self._fail(AnswerTooLarge(limit))
                    return
                # The whole declared body is taken at once: refused before it is read.
                if not self._hold(int(value)):
                    return
        if self._no_body:
            # llhttp cannot know the request was a HEAD: answer now, never reuse.
            self.reusable = False
            self._finish()
            self._close()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.pool.max_answer:  # chunked or close-delimited: counted as read
            self._fail(AnswerTooLarge(self.pool.max_answer))
            return
        if self._size > self._held and not self._hold(self._size - self._held):
            return
        self._body.append(body)

    def _hold(self, size: int) -> bool:
        budget = self.pool.budget
        if budget is None or size <= 0:
            return True
        if not budget.take(size):
            self._fail(OverBudget(budget))
            return False
        self._held += size
        return True

    def on_message_complete(self) -> None:
        assert self._parser is not None
        if not self._parser.should_keep_alive():
            self.reusable = False
        if self._status < 200:  # 1xx interim answer: not expected on this hop
            self.reusable = False
        self._finish()

    # --- the exchange ---

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            # The answer carries what it holds of the budget; the exchange keeps none.
            held, self._held = self._held, 0
            waiter.set_result(Answer(self._status, self._headers, body, held))

    def _fail(self, exc: GatewayError) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes, method: str) -> Answer:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise NeverSent()
        self._parser = httptools.HttpResponseParser(self)
        self._headers = []
        self._body = []
        self._size = 0
        self._status = 0
        self._head_done = False
        self._no_body = method in _NO_BODY
        self._waiter = asyncio.get_running_loop().create_future()
        waiter = self._waiter
        transport.write(request)
        try:
            return await waiter
        except BaseException:
            # Cancelled (a deadline) after the answer was complete: nobody will give back
            # what it holds unless done here.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(waiter.result().held)
            raise
        finally:
            self._waiter = None
            self._parser = None
            # Failed or cancelled part-way: what it had taken goes back at once.
            self._give_back(self._held)
            self._held = 0

    def _give_back(self, size: int) -> None:
        if size and self.pool.budget is not None:
            self.pool.budget.give_back(size)


class GatewayPool:
    """Kept-alive connections to one gateway (host, port, TLS)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        connect_timeout: float,
        keepalive: float = 15.0,
        max_answer: int = 16_777_216,
        budget: AnswerBudget | None = None,
    ) -> None:
        self.host = host
        self.max_answer = max_answer  # router.max_response_size
        self.budget = budget  # router.answer_budget, shared by the worker's pools
        self.port = port
        self.ssl = ssl_context
        self.limit = max(1, limit)
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(self.limit)
        self._closed = False

    def _forget(self, conn: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except TimeoutError:
            raise ConnectFailed(timed_out=True) from None
        except OSError as exc:
            raise ConnectFailed(str(exc.strerror or exc)) from None
        return conn

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            conn._close()
        return None

    def _close_stale(self, now: float) -> None:
        while self._idle and now - self._idle[0].idle_since >= self.keepalive:
            self._idle.popleft()._close()

    async def request(
        self, request: bytes, method: str, *, read_timeout: float, fresh: bool = False
    ) -> Answer:
        """One exchange on a pooled connection (or a new one: `fresh`, or none idle).

        Waiting for a free connection and connecting are bounded by `connect_timeout`
        (ConnectFailed, like a gateway that does not accept); the exchange itself, from
        writing the request to the answer's last byte, by `read_timeout` (TimeoutError).
        """
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                # Every connection busy for connect_timeout: to the client, not connected in time.
                raise ConnectFailed("every connection busy", timed_out=True) from None
        else:
            # A free slot is taken without waiting: no deadline to arm (one timer less on
            # every request's path).
            await self._slots.acquire()
        try:
            conn = None if fresh else self._take_idle()
            if conn is None:
                conn = await self._connect()
            try:
                async with asyncio.timeout(read_timeout):
                    answer = await conn.exchange(request, method)
            except BaseException:
                conn._close()
                raise
            if conn.reusable and not conn.closed and not self._closed:
                now = time.monotonic()
                conn.idle_since = now
                self._close_stale(now)
                self._idle.append(conn)
            else:
                conn._close()
            return answer
        finally:
            self._slots.release()

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop()._close()


def encode_request(
    method: str, target: str, host: str, headers: CIMultiDict[str], body: bytes | None
) -> bytes:
    """The request head and body as they go on the wire (headers already hop-cleaned)."""
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("utf-8", "surrogateescape")
    return head + body if body else head
