"""Fixed-rate, open-loop HTTP/1.1 load with a latency histogram.

    python -m bench.loadgen http://127.0.0.1:9001/gateway/sessions/session \
        --rate 1000 --duration 10 --warmup 2 --body-file session.json

Why not wrk: wrk is closed-loop (each connection sends its next request when the last one
answered), so it cannot hold a fixed rate, and its latencies then hide queueing (coordinated
omission). wrk2 and vegeta, which can, are not packaged in Debian here; `hey -q` is
rate-limited per worker but still closed-loop.

Why not aiohttp's client: its per-request cost (~100 us of Python) would be the noise floor
of a sub-millisecond measurement. Here requests are a few pre-built bytes written to kept-
alive sockets by an asyncio Protocol, and answers are parsed only as far as the status line
and Content-Length, so the generator adds little and, above all, the same to both runs.

Open loop: request i is due at t0 + i/rate whatever happened to earlier ones; each due
request takes an idle connection or opens a new one (up to --max-connections), so a slow
server gets more concurrent requests, as from real independent clients. The event loop's
timers have millisecond resolution, so requests due within one tick leave together; the
achieved rate and the send lag (actual minus due time) are reported with the latencies.
Latency runs from the write of the request to the last byte of the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import orjson
import uvloop

CONNECT_TIMEOUT = 2.0
DRAIN_TIMEOUT = 5.0


def percentiles(samples: list[int], points: tuple[float, ...]) -> dict[str, float]:
    """Nearest-rank percentiles of `samples` (nanoseconds), in milliseconds."""
    if not samples:
        return {}
    ordered = sorted(samples)
    out: dict[str, float] = {}
    for p in points:
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
        out[f"p{p:g}".replace(".", "")] = ordered[rank] / 1e6
    out["max"] = ordered[-1] / 1e6
    out["mean"] = sum(ordered) / len(ordered) / 1e6
    return out


class Connection(asyncio.Protocol):
    """One kept-alive connection carrying one request at a time."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.sent_ns = 0
        self.measured = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes, measured: bool) -> None:
        assert self.transport is not None
        self.measured = measured
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:  # chunked or close-delimited: not what the servers here send
            self.gen.finish(self, 0, 0)
            self.close()
            return
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop > 0 else len(head)])
        if len(self.buf) < end + 4 + length:
            return
        status = int(self.buf[9:12])
        elapsed = time.perf_counter_ns() - self.sent_ns
        del self.buf[: end + 4 + length]
        self.gen.finish(self, status, elapsed)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Generator:
    def __init__(self, url: str, method: str, body: bytes, max_connections: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.request = (head + "\r\n").encode() + body
        self.max_connections = max_connections
        self.idle: deque[Connection] = deque()
        self.open = 0
        self.in_flight = 0
        self.latencies: list[int] = []
        self.lags: list[int] = []
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.busy: set[Connection] = set()
        self.opened = 0

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        self.open += 1
        self.opened += 1
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(self), self.host, self.port),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError):
            self.open -= 1
            raise
        # uvloop may call connection_made() only on the next loop iteration.
        conn.transport = transport
        return conn

    def dispatch(self, measured: bool, lag_ns: int) -> None:
        if measured:
            self.lags.append(lag_ns)
        if self.idle:
            self._send(self.idle.pop(), measured)
        elif self.open < self.max_connections:
            self.in_flight += 1
            asyncio.ensure_future(self._connect_and_send(measured))
        else:
            self.errors["no connection free (server too slow)"] += int(measured)

    def _send(self, conn: Connection, measured: bool) -> None:
        if conn not in self.busy:
            self.in_flight += 1
        self.busy.add(conn)
        conn.send(self.request, measured)

    async def _connect_and_send(self, measured: bool) -> None:
        try:
            conn = await self.connect()
        except (OSError, TimeoutError) as exc:
            self.in_flight -= 1
            self.errors[f"connect: {exc.__class__.__name__}"] += int(measured)
            return
        self.busy.add(conn)
        conn.send(self.request, measured)

    def finish(self, conn: Connection, status: int, elapsed_ns: int) -> None:
        self.busy.discard(conn)
        self.in_flight -= 1
        if conn.measured:
            self.statuses[str(status)] += 1
            if 200 <= status < 300:
                self.latencies.append(elapsed_ns)
        if status:
            self.idle.append(conn)

    def lost(self, conn: Connection) -> None:
        self.open -= 1
        if conn in self.busy:
            self.busy.discard(conn)
            self.in_flight -= 1
            self.errors["connection lost"] += int(conn.measured)
        if conn in self.idle:
            self.idle.remove(conn)

    async def run(self, rate: float, duration: float, warmup: float) -> dict[str, object]:
        for _ in range(min(8, self.max_connections)):
            self.idle.append(await self.connect())
        total = int(rate * (warmup + duration))
        first_measured = int(rate * warmup)
        sent = 0
        t0 = time.perf_counter()
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - t0) * rate) + 1)
            while sent < due:
                lag_ns = int((now - (t0 + sent / rate)) * 1e9)
                self.dispatch(sent >= first_measured, lag_ns)
                sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
        send_time = time.perf_counter() - t0
        deadline = time.perf_counter() + DRAIN_TIMEOUT
        while self.in_flight > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        self.errors["unanswered at the end"] += max(0, self.in_flight)
        for conn in [*self.idle, *self.busy]:
            conn.close()
        measured = total - first_measured
        ok = len(self.latencies)
        return {
            "rate": rate,
            "duration_s": duration,
            "sent": measured,
            "ok": ok,
            "failed": measured - ok,
            "achieved_rate": round(total / send_time, 1),
            "statuses": dict(self.statuses),
            "errors": {k: v for k, v in self.errors.items() if v},
            "connections_opened": self.opened,
            "latency_ms": percentiles(self.latencies, (50, 90, 99, 99.9)),
            "send_lag_ms": percentiles(self.lags, (50, 99)),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--body-file", type=Path, help="request body (JSON)")
    parser.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args(argv)
    body = args.body_file.read_bytes() if args.body_file else b""
    gen = Generator(args.url, args.method, body, args.max_connections)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(gen.run(args.rate, args.duration, args.warmup))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
