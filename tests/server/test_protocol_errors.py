"""Requests aiohttp cannot parse get our JSON 400, which never echoes their bytes (issue 25,
item 14), on both listeners; and the client's `Forwarded` header does not reach a gateway
as it was sent. Raw sockets: an HTTP client would refuse to send such requests."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from router.config import build_config
from tests.helpers import Gateway, RedisServer, RouterFactory, RunningRouter, router_data
from tests.hostile import HostileGateway

CREDENTIAL = b"sekrit-credential-0123"
MALFORMED = [
    pytest.param(
        b"GET /gateway/adapter.js HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + CREDENTIAL
        + b"\x01\r\n\r\n",
        id="bad-header-value",
    ),
    pytest.param(
        b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Token-Router-Preview: b:"
        + CREDENTIAL
        + b"\r\nBad Header: "
        + CREDENTIAL
        + b"\r\n\r\n",
        id="bad-header-name",
    ),
    pytest.param(b"GET /\x01" + CREDENTIAL + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-target"),
    pytest.param(
        b"POST /gateway/sessions/session HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + CREDENTIAL
        + b"\r\n\r\n",
        id="bad-length",
    ),
]


def host_port(url: str) -> tuple[str, int]:
    host, _, port = url.rpartition("://")[2].rpartition(":")
    return host, int(port)


async def raw(url: str, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*host_port(url))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()


@pytest.mark.parametrize("listener", ["proxy", "admin"])
@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_a_malformed_request_is_answered_json_without_its_bytes(
    router: RunningRouter, listener: str, request_bytes: bytes
) -> None:
    url = router.proxy_url if listener == "proxy" else router.admin_url
    answer = await raw(url, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400", answer
    assert b"application/json" in head
    doc = orjson.loads(body)
    assert doc["error"] == "bad_request" and "not echoed" in doc["message"]
    assert CREDENTIAL not in answer


def header_values(head: str, name: str) -> list[str]:
    out = []
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            out.append(value.strip())
    return out


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
async def test_the_clients_forwarded_header_is_set_from_what_the_router_knows(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    trusted: bool,
) -> None:
    hostile = await HostileGateway().start()
    try:
        networks = ["127.0.0.0/8"] if trusted else ["192.0.2.0/24"]
        data = router_data(redis_server.url, gateways, trusted_networks=networks)
        data["systems"]["a"]["gateway"] = hostile.url
        running = await routers(build_config(data, {}))
        spoofed = {"Forwarded": "for=203.0.113.66;host=evil", "X-Forwarded-For": "203.0.113.66"}
        async with http.get(running.proxy_url + "/gateway/adapter.js", headers=spoofed) as resp:
            assert resp.status == 200
        head = hostile.heads[-1]
    finally:
        await hostile.stop()
    host = running.proxy_url.rpartition("/")[2]
    ours = f'for=127.0.0.1;proto=http;host="{host}"'
    if trusted:  # a back end's own proxy chain is kept, this hop appended
        assert header_values(head, "Forwarded") == [f"for=203.0.113.66;host=evil, {ours}"]
        assert header_values(head, "X-Forwarded-For") == ["203.0.113.66, 127.0.0.1"]
    else:  # a caller's claims are dropped: only this hop is told
        assert header_values(head, "Forwarded") == [ours]
        assert header_values(head, "X-Forwarded-For") == ["127.0.0.1"]
