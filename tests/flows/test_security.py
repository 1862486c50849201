"""Regression tests of issue 12 (the outside attack-and-fault pass), against real sockets.

Raw sockets where an HTTP client would normalise the request (absolute-form targets, slow or
oversized heads); a real simulated gateway or a byte-level hostile one (tests/hostile.py)
whose arrivals are counted, so "reaches nobody" is observed, not assumed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from router.config import build_config
from router.state.redis_client import redact
from tests.helpers import (
    ADMIN_AUTH,
    ADMIN_TOKEN,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    free_port,
    make_config,
    router_data,
    wait_until,
    write_toml,
)
from tests.hostile import HostileGateway


def arrivals(gateway: Gateway) -> int:
    return sum(gateway.state.requests.values())


def host_port(url: str) -> tuple[str, int]:
    host, _, port = url.rpartition("://")[2].rpartition(":")
    return host, int(port)


async def raw(url: str, data: bytes, timeout: float = 15.0) -> bytes:
    """Send `data` as is on a new connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> Any:
    return orjson.loads(answer.partition(b"\r\n\r\n")[2])


def token_request(target: bytes, host: bytes = b"router") -> bytes:
    body = orjson.dumps(SESSION_BODY)
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer caller-secret\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )


@pytest.fixture
async def router(
    redis_server: RedisServer, gateways: dict[str, Gateway], routers: RouterFactory
) -> RunningRouter:
    return await routers(make_config(redis_server.url, gateways))


@pytest.fixture
async def hostile() -> AsyncIterator[HostileGateway]:
    gateway = await HostileGateway().start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def hostile_router(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    hostile: HostileGateway,
    **router: Any,
) -> RunningRouter:
    data = router_data(redis_server.url, gateways, **router)
    data["systems"]["a"]["gateway"] = hostile.url
    return await routers(build_config(data, {}))


# --- 1. absolute-form request targets ---------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"evil://y/gateway/sessions/session",
        b"http://127.0.0.1:1/gateway/sessions/session",
        b"http://gw-a.internalevil/gateway/sessions/session",
    ],
)
async def test_absolute_form_target_is_400_and_reaches_no_gateway(
    router: RunningRouter, gateways: dict[str, Gateway], target: bytes
) -> None:
    answer = await raw(router.proxy_url, token_request(target))
    assert status_of(answer) == 400, answer
    assert body_of(answer)["error"] == "bad_request"
    assert [arrivals(g) for g in gateways.values()] == [0, 0]
    # Not counted as the gateway failing: nobody was asked.
    assert not any(status == 0 for (_, _, status) in router.server.runtime.metrics.local)


@pytest.mark.parametrize("request_line", [b"CONNECT 127.0.0.1:80 HTTP/1.1", b"OPTIONS * HTTP/1.1"])
async def test_authority_and_asterisk_targets_reach_no_gateway(
    router: RunningRouter, gateways: dict[str, Gateway], request_line: bytes
) -> None:
    answer = await raw(router.proxy_url, request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(answer) in (400, 404), answer
    assert [arrivals(g) for g in gateways.values()] == [0, 0]


async def test_gateway_sees_the_path_the_route_was_chosen_for(
    router: RunningRouter, gateways: dict[str, Gateway]
) -> None:
    # %73 is "s": the router classifies the decoded path, and the gateway gets that path.
    answer = await raw(router.proxy_url, token_request(b"/gateway/%73essions/session"))
    assert status_of(answer) == 200, answer
    assert gateways["a"].state.requests["session_create"] == 1


# --- 2. unbounded gateway answers, slow clients ---------------------------------------------


@pytest.mark.parametrize("mode", ["big", "chunked"])
async def test_oversized_answer_is_502_and_its_connection_dropped(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    hostile: HostileGateway,
    http: aiohttp.ClientSession,
    mode: str,
) -> None:
    running = await hostile_router(
        redis_server, gateways, routers, hostile, max_response_size=10_000
    )
    hostile.mode, hostile.size = mode, 200_000
    async with http.post(running.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 502
        doc = await resp.json()
    assert doc["error"] == "upstream_too_large" and doc["system"] == "a"
    assert "max_response_size" in doc["message"]
    hostile.mode = "ok"
    async with http.post(running.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 200
    # The oversized answer's connection was not put back in the pool.
    assert hostile.connections == 2
    assert len(hostile.requests) == 2


async def test_answer_at_the_cap_passes(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    hostile: HostileGateway,
    http: aiohttp.ClientSession,
) -> None:
    running = await hostile_router(
        redis_server, gateways, routers, hostile, max_response_size=10_000
    )
    hostile.mode, hostile.size = "chunked", 10_000
    async with http.post(running.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 200
        assert len(await resp.read()) == 10_000


async def test_trickling_gateway_is_cut_at_total_timeout(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    hostile: HostileGateway,
    http: aiohttp.ClientSession,
) -> None:
    # Every byte arrives well within read_timeout, so only the total deadline can stop it
    # (the whole answer would take 1000 x 0.05 s = 50 s).
    running = await hostile_router(
        redis_server, gateways, routers, hostile, read_timeout=5.0, total_timeout=1.0
    )
    hostile.mode, hostile.every = "trickle", 0.05
    async with asyncio.timeout(20):
        async with http.post(running.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
            assert resp.status == 504
            doc = await resp.json()
    assert doc["error"] == "upstream_timeout" and doc["system"] == "a"
    assert "total_timeout" in doc["message"]


async def test_slow_request_head_is_closed(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
) -> None:
    running = await routers(make_config(redis_server.url, gateways, client_header_timeout=0.5))
    reader, writer = await asyncio.open_connection(*host_port(running.proxy_url))
    try:
        writer.write(b"POST /gateway/sessions/session HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        # The head never completes: the router closes the connection (EOF), bounded here.
        assert await asyncio.wait_for(reader.read(), 15) == b""
    finally:
        writer.close()
    assert [arrivals(g) for g in gateways.values()] == [0, 0]


async def test_slow_request_body_is_408_at_total_timeout(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
) -> None:
    running = await routers(make_config(redis_server.url, gateways, total_timeout=0.5))
    reader, writer = await asyncio.open_connection(*host_port(running.proxy_url))
    try:
        writer.write(
            b"POST /gateway/sessions/session HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    finally:
        writer.close()
    assert status_of(head) == 408
    assert [arrivals(g) for g in gateways.values()] == [0, 0]


# --- 3. admin credential guessing -------------------------------------------------------------


async def test_wrong_bearers_are_throttled_and_logged_without_the_value(
    router: RunningRouter, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = router.admin_url + "/api/status"
    statuses = []
    for attempt in range(8):
        guess = f"guess-number-{attempt:04d}-xxxx"
        async with http.get(url, headers={"Authorization": f"Bearer {guess}"}) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                assert (await resp.json())["error"] == "too_many_attempts"
    assert statuses == [401] * 5 + [429] * 3
    # Throttled means not even checked: the right token from this address waits too.
    async with http.get(url, headers=ADMIN_AUTH) as resp:
        assert resp.status == 429
    failures = [r for r in caplog.records if "failed admin credential" in r.getMessage()]
    assert len(failures) == 5
    assert "127.0.0.1" in failures[0].getMessage() and "/api/status" in failures[0].getMessage()
    assert "guess-number" not in caplog.text and ADMIN_TOKEN not in caplog.text


async def test_another_address_is_not_locked_out_by_someone_elses_failures(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    url = router.admin_url + "/api/status"
    async with http.get(url, headers=ADMIN_AUTH) as resp:  # the operator's address is known
        assert resp.status == 200
    # A guesser at another loopback address (Linux routes all of 127/8 to lo).
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as guesser:
        for attempt in range(30):
            headers = {"Authorization": f"Bearer wrong-guess-{attempt:08d}"}
            async with guesser.get(url, headers=headers) as resp:
                assert resp.status in (401, 429)
            async with guesser.get(url, headers=ADMIN_AUTH) as resp:
                guesser_status = resp.status
    assert guesser_status == 429
    async with http.get(url, headers=ADMIN_AUTH) as resp:
        assert resp.status == 200


async def test_wrong_preview_secrets_are_throttled_too(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await routers(
        make_config(redis_server.url, gateways, preview_secret="preview-secret-0123")
    )
    url = running.proxy_url + SESSION_PATH
    systems = []
    for attempt in range(6):
        headers = {"X-Token-Router-Preview": f"b:guess-{attempt}"}
        async with http.post(url, json=SESSION_BODY, headers=headers) as resp:
            systems.append(
                resp.headers.get("X-Token-Router-System") if resp.status == 200 else resp.status
            )
    assert systems == [403] * 5 + [429]
    headers = {"X-Token-Router-Preview": "b:preview-secret-0123"}
    async with http.post(url, json=SESSION_BODY, headers=headers) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "guess-" not in caplog.text and "preview-secret-0123" not in caplog.text


def serve_once(config_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")},
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("router_keys", "key"),
    [
        ({"admin_token": "change-me"}, "router.admin_token"),
        ({"admin_token": "                    "}, "router.admin_token"),
        ({"admin_tokens": None}, "router.admin_tokens.alice"),
    ],
)
async def test_weak_admin_tokens_refuse_to_start(
    gateways: dict[str, Gateway], tmp_path: Path, router_keys: dict[str, Any], key: str
) -> None:
    data = router_data("memory://", gateways, **router_keys)
    path = write_toml(tmp_path / "router.toml", data)
    if "admin_tokens" in router_keys:
        del data["router"]["admin_tokens"]
        write_toml(path, data)
        with path.open("a", encoding="utf-8") as handle:
            handle.write('\n[router.admin_tokens]\nalice = "short"\n')
    result = await asyncio.to_thread(serve_once, path)
    line = one_line(result)
    assert key in line
    assert "change-me" not in line and "short" not in line.split(":", 2)[-1].split(";")[0]


# --- 4. read endpoints leak -------------------------------------------------------------------


async def test_every_api_route_needs_a_credential(
    router: RunningRouter, gateways: dict[str, Gateway], http: aiohttp.ClientSession
) -> None:
    app = router.server.admin_runner.app
    assert app is not None
    paths = {
        r.resource.canonical
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/api/")
    }
    assert {"/api/status", "/api/audit", "/api/releases", "/api/openapi.json"} <= paths
    for path in sorted(paths):
        concrete = path.replace("{system}", "a")
        for method in ("GET", "POST"):
            async with http.request(method, router.admin_url + concrete) as resp:
                assert resp.status in (401, 405), (method, path, resp.status)
                text = await resp.text()
            assert gateways["a"].url not in text and "redis://" not in text
    for path in ("/healthz", "/readyz", "/metrics"):
        async with http.get(router.admin_url + path) as resp:
            assert resp.status == 200, path
            text = await resp.text()
        assert gateways["a"].url not in text and "redis://" not in text, path


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2-secret@127.0.0.1:{port}/0",
        "redis://default:hunter2-secret@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password=hunter2-secret",
        "redis://127.0.0.1:{port}/0?socket_timeout=1&password=hunter2-secret",
    ],
)
async def test_redis_passwords_appear_in_no_answer_or_log(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    url: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    # This Redis has no password, so AUTH fails: the router runs degraded and says why,
    # everywhere an operator looks, without the password.
    running = await routers(make_config(url.format(port=redis_server.port), gateways))
    texts = [caplog.text]
    for path in ("/api/status", "/api/live", "/api/releases", "/readyz", "/metrics"):
        async with http.get(running.admin_url + path, headers=ADMIN_AUTH) as resp:
            texts.append(await resp.text())
    status = orjson.loads(texts[1])
    assert "***" in status["store"]["url"]
    assert not any("hunter2" in text for text in texts), texts


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw-1@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw-1@h:6379/0", "redis://user:***@h:6379/0"),
        ("rediss://h:6379/0?password=pw-1&db=2", "rediss://h:6379/0?password=***&db=2"),
        ("redis://h/0?sentinel_password=pw-1", "redis://h/0?sentinel_password=***"),
        ("unix:///run/redis.sock?db=0&password=pw-1", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://[::1:6379/0", "<unparsable URL>"),
    ],
)
def test_redact_covers_every_password_form(url: str, shown: str) -> None:
    assert redact(url) == shown


# --- 5. admin and proxy on one port ------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_admin_listen_resolving_to_the_proxy_socket_is_refused(
    redis_server: RedisServer, gateways: dict[str, Gateway], tmp_path: Path, workers: str
) -> None:
    port = free_port()
    data = router_data(
        redis_server.url, gateways, listen=f"127.0.0.1:{port}", admin_listen=f"localhost:{port}"
    )
    path = write_toml(tmp_path / "router.toml", data)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "router", "serve", "--config", str(path), "--workers", workers],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")},
    )
    line = one_line(result)
    assert "router.admin_listen" in line and "router.listen" in line


# --- 7. a bare SET to an offline system ---------------------------------------------------------


async def test_bare_set_to_an_offline_system_is_refused(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    running = await routers(make_config(redis_server.url, gateways))
    async with http.post(running.admin_url + "/api/systems/b/offline", headers=ADMIN_AUTH) as r:
        assert r.status == 200
    redis_server.command("SET", "tokenrouter:active", "b")

    async def refused() -> bool:
        refusal = running.server.runtime.holder.current.refused
        return refusal is not None and refusal.value == "b"

    await wait_until(refused)
    assert running.active == "a"
    async with http.post(running.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 200
        assert resp.headers["X-Token-Router-System"] == "a"
    async with http.get(running.admin_url + "/readyz") as resp:
        ready = await resp.json()
    assert ready == {"status": "ready", "refused": "b", "refused_reason": "offline"}
    async with http.get(running.admin_url + "/metrics") as resp:
        assert "tokenrouter_refused_active 1.0" in await resp.text()
    async with http.get(running.admin_url + "/api/status", headers=ADMIN_AUTH) as resp:
        status = await resp.json()
    assert status["refused"]["reason"] == "offline"
    async with http.get(running.admin_url + "/api/audit", headers=ADMIN_AUTH) as resp:
        entries = (await resp.json())["entries"]
    assert not any(e["action"] == "switch" and e["to"] == "b" for e in entries)


# --- 8. token mint open to any caller -----------------------------------------------------------


async def test_token_mint_answers_403_outside_trusted_networks(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    running = await routers(
        make_config(redis_server.url, gateways, trusted_networks=["10.0.0.0/8"])
    )
    proxy = running.proxy_url
    for method, path in (
        ("POST", SESSION_PATH),
        ("DELETE", SESSION_PATH + "/id/a-123"),
        ("PUT", "/assistserver/shortcode/create"),
    ):
        async with http.request(method, proxy + path, json=SESSION_BODY) as resp:
            assert resp.status == 403, (method, path)
            doc = await resp.json()
        assert doc["error"] == "forbidden" and "trusted_networks" in doc["message"]
    assert [arrivals(g) for g in gateways.values()] == [0, 0]
    # Browser routes stay open.
    for path in (
        "/router/current",
        "/gateway/adapter.js",
        "/assistserver/sdk/web/consumer/assist.js",
    ):
        async with http.get(proxy + path) as resp:
            assert resp.status == 200, path
    async with http.get(proxy + "/assistserver/shortcode/consumer?appkey=1234") as resp:
        assert resp.status == 403  # the simulated system's own answer for an unknown code
        assert resp.headers["X-Token-Router-System"] == "a"


async def test_token_mint_default_trusts_loopback_and_cors_opens_code_create(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    default = await routers(make_config(redis_server.url, gateways))
    async with http.post(default.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 200
    browser = await routers(
        make_config(
            redis_server.url,
            gateways,
            trusted_networks=["10.0.0.0/8"],
            cors_origins=["https://shop.example.com"],
        )
    )
    # With CORS configured, a short-code create is a browser route (Live Assist's consumer).
    async with http.put(browser.proxy_url + "/assistserver/shortcode/create") as resp:
        assert resp.status == 200
    async with http.post(browser.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 403


# --- 9. oversized heads: one log line ----------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /gateway/adapter.js HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_oversized_head_logs_one_line_without_traceback(
    router: RunningRouter, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    answer = await raw(router.proxy_url, request_bytes)
    assert status_of(answer) in (400, 413, 431)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 1
    record = records[0]
    assert record.exc_info is None and record.levelno == logging.WARNING
    assert "refused a malformed request from 127.0.0.1" in record.getMessage()
    assert "aaaa" not in caplog.text and "Traceback" not in caplog.text
