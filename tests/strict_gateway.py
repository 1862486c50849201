"""A gateway double written from FCSDK-API.md alone, not from our simulator.

It answers only what the contract documents, in the documented shapes: a token answer is
`{"sessionid": "..."}` and nothing else, a DELETE answers 204 with no body, an unknown short
code is a 403, a library file is its bytes. It sends no header of ours (no `X-Sim-System`),
echoes nothing, has no control routes: a test drives it through its Python object, the way an
operator drives a real system (upgrade it, end its calls). Its own monitoring is what
operators meet: a JSON status page of its own shape and a Prometheus exporter's text, so
the router's stats parsing is proven on shapes it was not written around.

Whatever the product needs beyond this is a defect: tests/flows/test_strict_gateway.py runs the
critical flows (token hop, follow-ups, `upgrade` with its smoke test, drain) against it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"
JSON_PATH = "/monitoring/status"  # {"node": ..., "calls": {"active": N}, "version": ...}
PROMETHEUS_PATH = "/exporter/metrics"  # media_broker_calls{broker="mb1",state="active"} N
LIBRARIES = (
    "/gateway/adapter.js",
    "/gateway/fusion-client-sdk.js",
    "/assistserver/sdk/web/consumer/assist.js",
)


@dataclass
class StrictGateway:
    """One system as FCSDK-API.md describes it; `url` once started."""

    name: str
    version: str
    sessions: set[str] = field(default_factory=set)
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (token, cid)
    received: list[dict[str, Any]] = field(default_factory=list)  # session descriptions
    url: str = ""
    _runner: web.AppRunner | None = None

    def library(self, path: str) -> bytes:
        seed = hashlib.sha256(f"{self.name}{path}{self.version}".encode()).hexdigest()
        return f"/* {path} {self.version} */\nvar build = '{seed}';\n".encode() * 40

    # --- the documented routes -----------------------------------------------------------

    async def _session(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=415)
        try:
            doc = await request.json()
        except ValueError:
            return web.Response(status=400)
        if not isinstance(doc, dict):
            return web.Response(status=400)
        self.received.append(doc)
        sid = secrets.token_urlsafe(18)
        self.sessions.add(sid)
        return web.json_response({"sessionid": sid})

    async def _delete(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        if sid not in self.sessions:
            return web.Response(status=404)
        self.sessions.discard(sid)
        return web.Response(status=204)

    async def _code_create(self, request: web.Request) -> web.Response:
        code = str(1_000_000 + secrets.randbelow(9_000_000))
        self.codes[code] = (secrets.token_hex(8), secrets.token_hex(6))
        return web.json_response({"shortCode": code})

    async def _consumer(self, request: web.Request) -> web.Response:
        found = self.codes.get(request.query.get("appkey", ""))
        if found is None:
            return web.Response(status=403)
        return web.json_response({"session-token": found[0], "cid": found[1]})

    async def _agent_lookup(self, request: web.Request) -> web.Response:
        found = self.codes.get(request.query.get("appkey", ""))
        if found is None:
            return web.Response(status=403)
        return web.json_response({"cid": found[1]})

    async def _agent(self, request: web.Request) -> web.Response:
        await request.post()
        return web.json_response({"token": secrets.token_hex(8)})

    async def _library(self, request: web.Request) -> web.Response:
        return web.Response(body=self.library(request.path), content_type="text/javascript")

    # --- its monitoring (not the FCSDK surface: what operators put beside it) ------------

    async def _json_status(self, request: web.Request) -> web.Response:
        doc = {"node": self.name, "calls": {"active": len(self.sessions)}, "version": self.version}
        return web.json_response(doc)

    async def _prometheus(self, request: web.Request) -> web.Response:
        open_ = len(self.sessions)
        text = (
            "# HELP media_broker_calls Calls per Media Broker and state.\n"
            "# TYPE media_broker_calls gauge\n"
            f'media_broker_calls{{broker="mb1",state="active"}} {open_}\n'
            'media_broker_calls{broker="mb1",state="held"} 7\n'
            "# HELP process_start_time_seconds Start time.\n"
            "# TYPE process_start_time_seconds gauge\n"
            "process_start_time_seconds 1.7e9\n"
        )
        return web.Response(text=text, content_type="text/plain")

    # --- lifetime ------------------------------------------------------------------------

    async def start(self) -> StrictGateway:
        app = web.Application()
        app.router.add_post("/gateway/sessions/session", self._session)
        app.router.add_delete("/gateway/sessions/session/id/{sid}", self._delete)
        app.router.add_put("/assistserver/shortcode/create", self._code_create)
        app.router.add_get("/assistserver/shortcode/consumer", self._consumer)
        app.router.add_get("/assistserver/shortcode/agent", self._agent_lookup)
        app.router.add_post("/assistserver/agent", self._agent)
        for path in LIBRARIES:
            app.router.add_get(path, self._library)
        app.router.add_get(JSON_PATH, self._json_status)
        app.router.add_get(PROMETHEUS_PATH, self._prometheus)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.url = f"http://{HOST}:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
