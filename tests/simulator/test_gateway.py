"""router/simulator.py: the simulated system, over real sockets, plus its pure library bytes."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.simulator.gateway import GatewayOptions, GatewayState
from router.simulator.library import LIBRARY_PATHS, library_files
from router.simulator.state import KEPT_DESCRIPTIONS
from tests.helpers import SESSION_BODY, SESSION_PATH, Gateway, start_gateway


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    started = await start_gateway("a", "1.0")
    try:
        yield started
    finally:
        await started.stop()


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """(status, parsed JSON body or None, response) of one request."""
    async with http.request(method, url, **kwargs) as resp:
        body = await resp.read()
        assert resp.headers.get("X-Sim-System") is not None, "every answer names its system"
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        return resp.status, parsed, resp


async def stats(http: aiohttp.ClientSession, gw: Gateway) -> dict[str, Any]:
    status, body, _ = await call(http, "GET", gw.url + "/_sim/state")
    assert status == 200
    assert isinstance(body, dict)
    return body


# --- FCSDK session tokens -------------------------------------------------------------------


async def test_session_answer_is_the_documented_one(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    """FCSDK-API.md: `{"sessionid": "..."}` and nothing else; what was sent is kept aside."""
    details = {"secure": False, "host": "b.example.com", "port": 8080}
    status, body, resp = await call(
        http, "POST", gw.url + SESSION_PATH, json={**SESSION_BODY, "urlSchemeDetails": details}
    )
    assert status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Sim-System"] == "a"
    assert list(body) == ["sessionid"]
    assert body["sessionid"].startswith("a-")
    assert (await stats(http, gw))["open_sessions"] == 1
    status, kept, _ = await call(http, "GET", f"{gw.url}/_sim/sessions/{body['sessionid']}")
    assert (status, kept) == (200, {"sessionid": body["sessionid"], "urlSchemeDetails": details})
    status, _, _ = await call(http, "GET", gw.url + "/_sim/sessions/a-unknown")
    assert status == 404


async def test_session_echo_is_an_option(http: aiohttp.ClientSession) -> None:
    gw = await start_gateway("a", "1.0", options=GatewayOptions(echo_description=True))
    try:
        details = {"secure": True, "host": "a.example.com", "port": "8443"}
        _, body, _ = await call(
            http, "POST", gw.url + SESSION_PATH, json={**SESSION_BODY, "urlSchemeDetails": details}
        )
        assert body == {"sessionid": body["sessionid"], "urlSchemeDetails": details}
    finally:
        await gw.stop()


def test_session_descriptions_kept_are_bounded() -> None:
    state = GatewayState("a", "1.0")
    for i in range(KEPT_DESCRIPTIONS + 10):
        state.keep_description(f"a-{i}", {"port": i})
    assert len(state.received) == KEPT_DESCRIPTIONS
    assert "a-0" not in state.received
    assert state.received[f"a-{KEPT_DESCRIPTIONS + 9}"] == {"port": KEPT_DESCRIPTIONS + 9}


async def test_session_ids_are_unique(gw: Gateway, http: aiohttp.ClientSession) -> None:
    ids = set()
    for _ in range(5):
        _, body, _ = await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
        ids.add(body["sessionid"])
    assert len(ids) == 5
    assert gw.state.sessions == ids


async def test_session_without_url_scheme_details(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, "POST", gw.url + SESSION_PATH, json={"webAppId": "x"})
    assert status == 200
    assert gw.state.received[body["sessionid"]] is None


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'"text"', b""])
async def test_session_malformed_json(
    gw: Gateway, http: aiohttp.ClientSession, payload: bytes
) -> None:
    status, body, _ = await call(http, "POST", gw.url + SESSION_PATH, data=payload)
    assert status == 400
    assert body["error"] == "malformed_json"
    assert body["system"] == "a"
    assert gw.state.sessions == set()


async def test_session_delete(gw: Gateway, http: aiohttp.ClientSession) -> None:
    _, body, _ = await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
    sid = body["sessionid"]
    url = f"{gw.url}/gateway/sessions/session/id/{sid}"
    status, body, _ = await call(http, "DELETE", url)
    assert (status, body) == (204, None)
    assert (await stats(http, gw))["open_sessions"] == 0
    status, body, _ = await call(http, "DELETE", url)  # already gone
    assert status == 404
    assert body["error"] == "unknown_session"


async def test_session_delete_unknown(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, "DELETE", gw.url + "/gateway/sessions/session/id/b-123")
    assert status == 404
    assert body == {
        "error": "unknown_session",
        "message": "session 'b-123' is not open here",
        "system": "a",
    }


async def test_token_only_works_on_its_system(http: aiohttp.ClientSession) -> None:
    a, b = await start_gateway("a", "1.0"), await start_gateway("b", "2.0")
    try:
        _, body, _ = await call(http, "POST", a.url + SESSION_PATH, json=SESSION_BODY)
        sid = body["sessionid"]
        status, _, resp = await call(http, "DELETE", f"{b.url}/gateway/sessions/session/id/{sid}")
        assert status == 404 and resp.headers["X-Sim-System"] == "b"
        status, _, _ = await call(http, "DELETE", f"{a.url}/gateway/sessions/session/id/{sid}")
        assert status == 204
    finally:
        await a.stop()
        await b.stop()


# --- Live Assist short codes and tokens -----------------------------------------------------


async def test_short_code_lifecycle(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, "PUT", gw.url + "/assistserver/shortcode/create")
    assert status == 200
    code = body["shortCode"]
    assert isinstance(code, str) and len(code) == 7 and code.isdigit() and code[0] != "0"
    status, consumer, _ = await call(
        http, "GET", gw.url + "/assistserver/shortcode/consumer", params={"appkey": code}
    )
    assert status == 200
    assert set(consumer) == {"session-token", "cid"}
    assert consumer["session-token"].startswith("a-")
    status, agent, _ = await call(
        http, "GET", gw.url + "/assistserver/shortcode/agent", params={"appkey": code}
    )
    assert status == 200
    assert agent == {"cid": consumer["cid"]}
    assert (await stats(http, gw))["short_codes"] == 1


@pytest.mark.parametrize("role", ["consumer", "agent"])
@pytest.mark.parametrize("params", [{"appkey": "1234567"}, {}], ids=["unknown", "missing"])
async def test_short_code_unknown_is_403(
    gw: Gateway, http: aiohttp.ClientSession, role: str, params: dict[str, str]
) -> None:
    status, body, _ = await call(
        http, "GET", f"{gw.url}/assistserver/shortcode/{role}", params=params
    )
    assert status == 403
    assert body["error"] == "unknown_short_code"
    assert body["system"] == "a"


@pytest.mark.parametrize("role", ["agent", "consumer"])
async def test_assist_form_echo(gw: Gateway, http: aiohttp.ClientSession, role: str) -> None:
    form = {"username": "agent1", "password": "p", "type": "create"}
    status, body, _ = await call(http, "POST", f"{gw.url}/assistserver/{role}", data=form)
    assert status == 200
    assert body["system"] == "a"
    assert body["form"] == form
    assert body["token"].startswith("a-")
    assert (await stats(http, gw))["requests"][f"assist_{role}"] == 1


async def test_assist_empty_form(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, "POST", gw.url + "/assistserver/agent")
    assert status == 200
    assert body["form"] == {}


# --- library files --------------------------------------------------------------------------


def test_library_bytes_deterministic_per_version() -> None:
    first, again = library_files("1.0"), library_files("1.0")
    assert set(first) == set(LIBRARY_PATHS)
    assert first == again
    other = library_files("2.0")
    for path in LIBRARY_PATHS:
        assert first[path][0] != other[path][0], path
        assert first[path][1] == other[path][1]


def test_library_content_types_and_sizes() -> None:
    files = library_files("3.1.4")
    assert files["/gateway/adapter.js"][1] == "application/javascript"
    assert files["/assistserver/sdk/web/consumer/assist.css"][1] == "text/css"
    assert files["/assistserver/sdk/web/shared/img/logo.png"][1] == "image/png"
    # The SDK is the large file the release benchmark serves; the others hundreds of KB.
    assert len(files["/gateway/fusion-client-sdk.js"][0]) > 500_000
    assert all(len(body) > 1_000 for body, _ in files.values())
    assert b"version 3.1.4" in files["/gateway/adapter.js"][0]


def test_library_javascript_registers_itself() -> None:
    body = library_files("1.0")["/gateway/adapter.js"][0].decode()
    assert body.startswith("/* token-router simulated library /gateway/adapter.js version 1.0 */")
    assert 'root.__simLibraries["/gateway/adapter.js"] = {version: "1.0"' in body
    hostile = library_files('9 */ alert("x") /*')["/gateway/adapter.js"][0].decode()
    header = hostile.split("\n", 1)[0]
    assert header.count("*/") == 1 and header.endswith("*/")  # cannot close the comment early


def test_library_png_is_a_valid_image() -> None:
    png = library_files("1.0")["/assistserver/sdk/web/shared/img/logo.png"][0]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    chunks: dict[bytes, bytes] = {}
    offset = 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        tag = png[offset + 4 : offset + 8]
        data = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(tag + data)
        chunks[tag] = data
        offset += 12 + length
    assert list(chunks)[-1] == b"IEND"
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    assert (width, height) == (32, 32)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + width * 3)


async def test_library_served_per_version(http: aiohttp.ClientSession) -> None:
    a1, a2, b = (
        await start_gateway("a", "1.0"),
        await start_gateway("other", "1.0"),
        await start_gateway("b", "2.0"),
    )
    try:
        for path in LIBRARY_PATHS:
            bodies = []
            for gateway in (a1, a2, b):
                async with http.get(gateway.url + path) as resp:
                    assert resp.status == 200
                    assert resp.headers["Cache-Control"] == "no-cache"
                    assert resp.headers["Content-Type"].startswith(
                        library_files(gateway.version)[path][1]
                    )
                    bodies.append(await resp.read())
            assert bodies[0] == bodies[1] == library_files("1.0")[path][0]
            assert bodies[2] == library_files("2.0")[path][0]
            assert bodies[0] != bodies[2]
    finally:
        for gateway in (a1, a2, b):
            await gateway.stop()


async def test_library_head_and_unknown(gw: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.head(gw.url + "/gateway/adapter.js") as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(
            library_files("1.0")["/gateway/adapter.js"][0]
        )
    status, body, _ = await call(http, "GET", gw.url + "/gateway/unknown.js")
    assert status == 404
    assert body["system"] == "a"


async def test_sim_version_upgrades_in_place(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, "POST", gw.url + "/_sim/version", json={"version": "1.1"})
    assert status == 200 and body["version"] == "1.1"
    async with http.get(gw.url + "/gateway/adapter.js") as resp:
        assert await resp.read() == library_files("1.1")["/gateway/adapter.js"][0]
    for bad in ({"version": ""}, {"version": 2}, {}):
        status, body, _ = await call(http, "POST", gw.url + "/_sim/version", json=bad)
        assert status == 400 and body["error"] == "bad_request"


# --- /_sim/* controls -----------------------------------------------------------------------


async def test_sim_fail_counted(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(
        http, "POST", gw.url + "/_sim/fail", json={"status": 503, "count": 2}
    )
    assert status == 200
    assert body["fail"] == {"status": 503, "count": 2}
    for _ in range(2):
        status, body, resp = await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
        assert status == 503
        assert body["error"] == "simulated_failure"
        assert resp.headers["X-Sim-System"] == "a"
    status, _, _ = await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
    assert status == 200
    assert (await stats(http, gw))["fail"] is None


async def test_sim_fail_until_cleared(gw: Gateway, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", gw.url + "/_sim/fail", json={"status": 500, "count": None})
    for path in ("/gateway/adapter.js", "/stats"):
        status, _, _ = await call(http, "GET", gw.url + path)
        assert status == 500
    # Control routes are exempt from injected faults, so a test can look and clear.
    assert (await stats(http, gw))["fail"] == {"status": 500, "count": None}
    status, body, _ = await call(http, "POST", gw.url + "/_sim/fail", json={"status": None})
    assert status == 200 and body["fail"] is None
    status, _, _ = await call(http, "GET", gw.url + "/stats")
    assert status == 200


async def test_sim_fail_default_status(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, "POST", gw.url + "/_sim/fail", json={"count": 1})
    assert status == 200 and body["fail"] == {"status": 500, "count": 1}
    status, _, _ = await call(http, "GET", gw.url + "/stats")
    assert status == 500


@pytest.mark.parametrize(
    "payload",
    [
        {"status": 200},
        {"status": 600},
        {"status": "500"},
        {"status": True},
        {"count": -1},
        {"count": 1.5},
        {"count": False},
        [1],
    ],
    ids=["2xx", "600", "string", "bool", "negative", "float", "bool-count", "list"],
)
async def test_sim_fail_bad_request(
    gw: Gateway, http: aiohttp.ClientSession, payload: object
) -> None:
    status, body, _ = await call(http, "POST", gw.url + "/_sim/fail", json=payload)
    assert status == 400
    assert body["error"] in ("bad_request", "malformed_json")
    assert (await stats(http, gw))["fail"] is None


async def test_sim_fail_count_zero_clears(gw: Gateway, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", gw.url + "/_sim/fail", json={"status": 500})
    status, body, _ = await call(http, "POST", gw.url + "/_sim/fail", json={"count": 0})
    assert status == 200 and body["fail"] is None


async def test_sim_slow(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, "POST", gw.url + "/_sim/slow", json={"delay": 0.5})
    assert status == 200 and body["delay"] == 0.5
    with pytest.raises(TimeoutError):
        async with http.get(gw.url + "/stats", timeout=aiohttp.ClientTimeout(total=0.05)) as resp:
            await resp.read()
    # /_sim/ routes are not slowed down.
    status, body, _ = await call(http, "POST", gw.url + "/_sim/slow", json={"delay": 0})
    assert status == 200 and body["delay"] == 0.0


@pytest.mark.parametrize(
    "payload",
    [{"delay": -1}, {"delay": "1"}, {"delay": True}, {}, {"delay": None}],
    ids=["negative", "string", "bool", "missing", "null"],
)
async def test_sim_slow_bad_request(
    gw: Gateway, http: aiohttp.ClientSession, payload: object
) -> None:
    status, body, _ = await call(http, "POST", gw.url + "/_sim/slow", json=payload)
    assert status == 400 and body["error"] == "bad_request"


async def test_sim_slow_rejects_non_finite(gw: Gateway, http: aiohttp.ClientSession) -> None:
    # orjson will not write NaN; the simulator parses what a client could send.
    for raw in (b'{"delay": NaN}', b'{"delay": 1e999}'):
        status, _, _ = await call(http, "POST", gw.url + "/_sim/slow", data=raw)
        assert status == 400


async def test_sim_reset(gw: Gateway, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
    await call(http, "PUT", gw.url + "/assistserver/shortcode/create")
    await call(http, "POST", gw.url + "/_sim/version", json={"version": "1.5"})
    await call(http, "POST", gw.url + "/_sim/fail", json={"status": 500, "count": 9})
    await call(http, "POST", gw.url + "/_sim/slow", json={"delay": 0.25})
    status, body, _ = await call(http, "POST", gw.url + "/_sim/reset")
    assert status == 200
    assert body == {
        "name": "a",
        "version": "1.5",  # installed: a reset does not downgrade
        "open_sessions": 0,
        "short_codes": 0,
        "requests": {},
        "fail": None,
        "delay": 0.0,
    }


async def test_stats_counts_requests_by_route(gw: Gateway, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
    await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
    await call(http, "GET", gw.url + "/gateway/adapter.js")
    await call(http, "GET", gw.url + "/nowhere")
    await call(http, "OPTIONS", gw.url + "/assistserver/shortcode/create")
    status, body, _ = await call(http, "GET", gw.url + "/stats")
    assert status == 200
    assert body["name"] == "a" and body["version"] == "1.0"
    assert body["open_sessions"] == 2
    assert body["requests"] == {
        "session_create": 2,
        "library": 1,
        "unmatched": 1,
        "preflight": 1,
        "stats": 1,
    }


# --- errors, CORS, the system header --------------------------------------------------------


async def test_monitoring_shapes(gw: Gateway, http: aiohttp.ClientSession) -> None:
    """The same counts as a nested JSON status page and as Prometheus text."""
    for _ in range(3):
        _, body, _ = await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
    await call(http, "DELETE", f"{gw.url}/gateway/sessions/session/id/{body['sessionid']}")
    await call(http, "PUT", gw.url + "/assistserver/shortcode/create")
    status, doc, _ = await call(http, "GET", gw.url + "/status.json")
    assert status == 200
    assert doc["gateway"]["sessions"] == {"open": 2, "released": 1}
    assert doc["assist"]["shortCodes"] == {"active": 1}
    assert "open_sessions" not in doc
    async with http.get(gw.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("fcsdk_sessions", (("state", "open"), ("system", "a")))] == 2
    assert samples[("fcsdk_sessions", (("state", "released"), ("system", "a")))] == 1
    assert samples[("fcsdk_short_codes", (("system", "a"),))] == 1
    assert samples[("fcsdk_build_info", (("system", "a"), ("version", "1.0")))] == 1


async def test_delete_status_is_an_option(http: aiohttp.ClientSession) -> None:
    gw = await start_gateway("a", "1.0", options=GatewayOptions(delete_status=200))
    try:
        _, body, _ = await call(http, "POST", gw.url + SESSION_PATH, json=SESSION_BODY)
        sid = body["sessionid"]
        status, body, _ = await call(http, "DELETE", f"{gw.url}/gateway/sessions/session/id/{sid}")
        assert (status, body) == (200, {"deleted": sid})
    finally:
        await gw.stop()
    with pytest.raises(ValueError, match="not a 2xx"):
        GatewayOptions(delete_status=404)


async def test_unknown_path_is_json_404(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, resp = await call(http, "GET", gw.url + "/admin")
    assert status == 404
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Sim-System"] == "a"
    assert body["error"] == "http_error" and body["system"] == "a"


async def test_wrong_method_is_json_405(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, resp = await call(http, "GET", gw.url + SESSION_PATH)
    assert status == 405
    assert "POST" in resp.headers["Allow"]
    assert body["system"] == "a"


async def test_cors_preflight_and_origin(gw: Gateway, http: aiohttp.ClientSession) -> None:
    status, _, resp = await call(
        http,
        "OPTIONS",
        gw.url + "/assistserver/shortcode/create",
        headers={
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "Content-Type, X-Custom",
        },
    )
    assert status == 204
    assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "Content-Type, X-Custom"
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    status, _, resp = await call(
        http,
        "PUT",
        gw.url + "/assistserver/shortcode/create",
        headers={"Origin": "https://shop.example.com"},
    )
    assert status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert resp.headers["Vary"] == "Origin"
    _, _, resp = await call(http, "PUT", gw.url + "/assistserver/shortcode/create")
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_every_answer_names_the_system(http: aiohttp.ClientSession) -> None:
    b = await start_gateway("b", "2.0")
    try:
        for method, path in [
            ("POST", SESSION_PATH),
            ("GET", "/gateway/adapter.js"),
            ("GET", "/stats"),
            ("GET", "/_sim/state"),
            ("GET", "/nowhere"),
            ("PUT", SESSION_PATH),
        ]:
            _, _, resp = await call(http, method, b.url + path, json=SESSION_BODY)
            assert resp.headers["X-Sim-System"] == "b", (method, path)
    finally:
        await b.stop()


# --- GatewayState, pure ---------------------------------------------------------------------


def test_gateway_state_failure_accounting() -> None:
    state = GatewayState("a", "1.0")
    assert state.take_failure() is None
    state.set_failure(502, 2)
    assert [state.take_failure() for _ in range(3)] == [502, 502, None]
    state.set_failure(500, None)
    assert [state.take_failure() for _ in range(3)] == [500, 500, 500]
    state.set_failure(None, 5)
    assert state.take_failure() is None


def test_gateway_state_short_codes_unique() -> None:
    state = GatewayState("a", "1.0")
    codes = {state.new_short_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == 7 for c in codes)
