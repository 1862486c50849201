"""The stack's ceiling: a minimal aiohttp + uvloop pass-through proxy, one process.

    python -m bench.ceiling --port 8090 --upstream http://127.0.0.1:9001

SPEC section 3 measures the router's token route against this. It does the least any proxy
on this stack must do per request, and nothing more: read the request body, send it over a
kept-alive aiohttp client connection, read the answer, return status, Content-Type and body.
No JSON parsing, no header hygiene, no routing decision, no Redis, no access log. Anything
the router adds on top (classify, decide, parse and rewrite the session description,
affinity record, X-Forwarded-*) is what the ratio prices.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {}
    if "Content-Type" in request.headers:
        headers["Content-Type"] = request.headers["Content-Type"]
    session = request.app[SESSION]
    url = request.app[UPSTREAM] + request.raw_path
    async with session.request(request.method, url, data=body or None, headers=headers) as resp:
        payload = await resp.read()
        out_headers = {}
        if "Content-Type" in resp.headers:
            out_headers["Content-Type"] = resp.headers["Content-Type"]
        return web.Response(status=resp.status, body=payload, headers=out_headers)


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_route("*", "/{tail:.*}", forward)

    async def client(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=15.0)
        app[SESSION] = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(client)
    return app


async def serve(host: str, port: int, upstream: str) -> None:
    runner = web.AppRunner(create_app(upstream), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    print(f"ceiling proxy on http://{host}:{port} -> {upstream}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9001")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port, args.upstream))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
