"""The simulated system: one FCSDK Web Gateway + Live Assist server as an aiohttp app.

SPEC section 5. It is the upstream of the demo, of every proxy test and of the
benchmarks, so the request path stays lean (orjson, no per-request logging, library
bytes generated once per version) and everything a test compares is deterministic:
library bytes depend only on the version, never on the process or the clock.

By default it answers exactly as FCSDK-API.md documents a system: a token answer is
`{"sessionid": "..."}` and nothing else, a DELETE answers 204 with no body. Nothing in the
product may lean on a habit only the simulator has, so whatever it does beyond that is
explicit: `GatewayOptions` (a gateway that echoes the session description, one that answers
a DELETE with another 2xx), the monitoring routes operators meet in front of a real system
(`GET /stats`, a flat JSON document; `GET /status.json`, a nested one; `GET /metrics`,
Prometheus text) and control routes under `/_sim/` that make it fail, slow down, upgrade in
place, forget everything or say what it received. "Going away" is simply stopping the app
(cancel `run_gateway`, close the test server).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from router.simulator.library import LIBRARY_PATHS, library_files
from router.simulator.state import GatewayOptions, GatewayState, ShortCode

__all__ = [
    "LIBRARY_PATHS",
    "SIM_STATE",
    "GatewayOptions",
    "GatewayState",
    "create_gateway_app",
    "library_files",
    "run_gateway",
]

_JSON_HEADERS = {"Content-Type": "application/json"}


SIM_STATE = web.AppKey("sim_state", GatewayState)


# --- answers ---------------------------------------------------------------------------


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=_JSON_HEADERS)


def _error(state: GatewayState, status: int, code: str, message: str) -> web.Response:
    # Same shape as the router's own errors (errors.RequestError.to_json).
    body = {"error": code, "message": message, "system": state.name}
    return _json(body, status)


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


# --- FCSDK routes ----------------------------------------------------------------------


async def _session_create(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    body = await _json_object(request)
    if body is None:
        return _error(state, 400, "malformed_json", "the session description is not a JSON object")
    sid = state.new_token()
    state.sessions.add(sid)
    details = body.get("urlSchemeDetails")
    state.keep_description(sid, details)
    if state.options.echo_description:
        return _json({"sessionid": sid, "urlSchemeDetails": details})
    return _json({"sessionid": sid})


async def _session_delete(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    sid = request.match_info["sid"]
    if sid not in state.sessions:
        return _error(state, 404, "unknown_session", f"session {sid!r} is not open here")
    state.sessions.discard(sid)
    state.released += 1
    status = state.options.delete_status
    if status == 204:
        return web.Response(status=204)
    return _json({"deleted": sid}, status)


async def _shortcode_create(request: web.Request) -> web.Response:
    return _json({"shortCode": request.app[SIM_STATE].new_short_code()})


def _lookup_code(request: web.Request) -> ShortCode | web.Response:
    state = request.app[SIM_STATE]
    entry = state.short_codes.get(request.query.get("appkey", ""))
    if entry is None:
        return _error(state, 403, "unknown_short_code", "this short code was not issued here")
    return entry


async def _shortcode_consumer(request: web.Request) -> web.Response:
    entry = _lookup_code(request)
    if isinstance(entry, web.Response):
        return entry
    return _json({"session-token": entry.session_token, "cid": entry.cid})


async def _shortcode_agent(request: web.Request) -> web.Response:
    entry = _lookup_code(request)
    if isinstance(entry, web.Response):
        return entry
    return _json({"cid": entry.cid})


def _form_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(getattr(value, "filename", ""))


async def _assist_token(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    try:
        form = await request.post()
    except ValueError:
        return _error(state, 400, "bad_form", "the body is not a valid form")
    fields = {key: _form_value(value) for key, value in form.items()}
    return _json({"token": state.new_token(), "system": state.name, "form": fields})


# Two handlers rather than one so /stats counts agents and consumers apart.
async def _assist_agent(request: web.Request) -> web.Response:
    return await _assist_token(request)


async def _assist_consumer(request: web.Request) -> web.Response:
    return await _assist_token(request)


async def _library(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    found = state.files.get(request.path)
    if found is None:
        return _error(state, 404, "not_found", f"no library file at {request.path}")
    body, content_type = found
    # no-cache like a gateway whose files change on upgrade: the router must revalidate.
    headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}
    return web.Response(body=body, headers=headers)


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[SIM_STATE].as_json())


async def _status_json(request: web.Request) -> web.Response:
    return _json(request.app[SIM_STATE].status_document())


async def _metrics(request: web.Request) -> web.Response:
    text = request.app[SIM_STATE].prometheus_text()
    return web.Response(
        body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


# --- control routes (/_sim/) -----------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _sim_fail(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    body = await _json_object(request)
    if body is None:
        return _error(state, 400, "malformed_json", 'expected {"status": 500, "count": N|null}')
    status, count = body.get("status", 500), body.get("count")
    if status is not None and not (_is_int(status) and 400 <= status <= 599):
        return _error(state, 400, "bad_request", "status must be an integer 400-599 or null")
    if count is not None and not (_is_int(count) and count >= 0):
        return _error(state, 400, "bad_request", "count must be a non-negative integer or null")
    state.set_failure(status, count)
    return _json(state.as_json())


async def _sim_slow(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    body = await _json_object(request)
    delay = None if body is None else body.get("delay")
    if (
        not isinstance(delay, int | float)
        or isinstance(delay, bool)
        or not math.isfinite(delay)
        or delay < 0
    ):
        return _error(state, 400, "bad_request", 'expected {"delay": seconds >= 0}')
    state.delay = float(delay)
    return _json(state.as_json())


async def _sim_version(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    body = await _json_object(request)
    version = None if body is None else body.get("version")
    if not isinstance(version, str) or not version:
        return _error(state, 400, "bad_request", 'expected {"version": "<non-empty string>"}')
    state.set_version(version)
    return _json(state.as_json())


async def _sim_reset(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    state.reset()
    return _json(state.as_json())


async def _sim_state(request: web.Request) -> web.Response:
    # /stats, but exempt from injected faults, so a test can look while failing.
    return _json(request.app[SIM_STATE].as_json())


async def _sim_session(request: web.Request) -> web.Response:
    """The urlSchemeDetails a recent token request carried: what the router forwarded."""
    state = request.app[SIM_STATE]
    sid = request.match_info["sid"]
    if sid not in state.received:
        return _error(state, 404, "unknown_session", f"no session description kept for {sid!r}")
    return _json({"sessionid": sid, "urlSchemeDetails": state.received[sid]})


# (method, path, handler, label counted in /stats). GET also answers HEAD.
_ROUTES: tuple[tuple[str, str, Handler, str], ...] = (
    ("POST", "/gateway/sessions/session", _session_create, "session_create"),
    ("DELETE", "/gateway/sessions/session/id/{sid}", _session_delete, "session_delete"),
    ("PUT", "/assistserver/shortcode/create", _shortcode_create, "shortcode_create"),
    ("GET", "/assistserver/shortcode/consumer", _shortcode_consumer, "shortcode_consumer"),
    ("GET", "/assistserver/shortcode/agent", _shortcode_agent, "shortcode_agent"),
    ("POST", "/assistserver/agent", _assist_agent, "assist_agent"),
    ("POST", "/assistserver/consumer", _assist_consumer, "assist_consumer"),
    *(("GET", path, _library, "library") for path in LIBRARY_PATHS),
    ("GET", "/stats", _stats, "stats"),
    ("GET", "/status.json", _status_json, "stats"),
    ("GET", "/metrics", _metrics, "stats"),
    ("POST", "/_sim/fail", _sim_fail, "sim_fail"),
    ("POST", "/_sim/slow", _sim_slow, "sim_slow"),
    ("POST", "/_sim/version", _sim_version, "sim_version"),
    ("POST", "/_sim/reset", _sim_reset, "sim_reset"),
    ("GET", "/_sim/state", _sim_state, "sim_state"),
    ("GET", "/_sim/sessions/{sid}", _sim_session, "sim_session"),
)
_LABELS: dict[Handler, str] = {handler: label for _, _, handler, label in _ROUTES}
_CONTROL: frozenset[Handler] = frozenset(h for _, p, h, _ in _ROUTES if p.startswith("/_sim/"))
_CORS_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"


def _preflight(request: web.Request) -> web.Response:
    headers = {
        "Access-Control-Allow-Methods": _CORS_METHODS,
        "Access-Control-Allow-Headers": request.headers.get(
            "Access-Control-Request-Headers", "Content-Type"
        ),
        "Access-Control-Max-Age": "600",
    }
    return web.Response(status=204, headers=headers)


async def _dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        # Unknown paths and wrong methods: JSON like every other answer, not aiohttp's text.
        response = _error(request.app[SIM_STATE], exc.status, "http_error", exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


@web.middleware
async def _simulate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, inject faults, answer CORS preflights, stamp every answer with the system."""
    state = request.app[SIM_STATE]
    route_handler = request.match_info.handler
    preflight = request.method == "OPTIONS"
    state.requests["preflight" if preflight else _LABELS.get(route_handler, "unmatched")] += 1
    if route_handler in _CONTROL:
        response = await _dispatch(request, handler)
    else:
        # The failure is decided on arrival so concurrent requests consume `count` in order.
        status = state.take_failure()
        if state.delay > 0:
            await asyncio.sleep(state.delay)
        if status is not None:
            response = _error(state, status, "simulated_failure", "failure injected by /_sim/fail")
        elif preflight:
            response = _preflight(request)
        else:
            response = await _dispatch(request, handler)
    headers = response.headers
    headers["X-Sim-System"] = state.name
    origin = request.headers.get("Origin")
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        headers["Vary"] = "Origin"
    return response


# --- app and runner --------------------------------------------------------------------


def create_gateway_app(
    name: str, version: str, options: GatewayOptions | None = None
) -> web.Application:
    """One simulated system called `name` serving library version `version`; `options`
    for what it does beyond FCSDK-API.md (nothing by default)."""
    app = web.Application(middlewares=[_simulate])
    app[SIM_STATE] = GatewayState(name, version, options)
    for method, path, handler, _ in _ROUTES:
        if method == "GET":
            app.router.add_get(path, handler)
        else:
            app.router.add_route(method, path, handler)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run_gateway(
    name: str, version: str, host: str, port: int, options: GatewayOptions | None = None
) -> None:
    """Serve one simulated system until cancelled (`token-router simulate-gateway`).

    Prints one line with the URL once listening; with port 0 it shows the port chosen.
    """
    # access_log=None: the simulator is the benchmark upstream; logging would be the cost.
    runner = web.AppRunner(create_gateway_app(name, version, options), access_log=None)
    await runner.setup()
    try:
        # A larger backlog than aiohttp's 128 so load-test bursts are not dropped here.
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        print(f"simulated system {name} {version} on {_url(host, bound)}", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
