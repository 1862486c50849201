"""Logs as a collector sees them: JSON lines, one per request, request id propagated."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson

from router.logs import loggable_path, request_id
from tests.helpers import (
    HOST,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterProcess,
    free_port,
    router_data,
    wait_ready,
    wait_until,
    write_toml,
)


def test_request_id_keeps_sane_ids_and_replaces_others() -> None:
    assert request_id("abc-123") == "abc-123"
    for bad in (None, "", "x" * 129, "two words", "tab\there", "nul\x00"):
        fresh = request_id(bad)
        assert len(fresh) == 16 and int(fresh, 16) >= 0


async def test_json_access_log_and_state_changes(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    proxy, admin = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    data = router_data(
        redis_server.url,
        gateways,
        listen=proxy,
        admin_listen=admin,
        log_format="json",
        access_log=True,
    )
    router = RouterProcess(write_toml(tmp_path / "router.toml", data))
    router.start()
    try:
        await wait_ready(f"http://{admin}")
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://{proxy}{SESSION_PATH}",
                data=orjson.dumps(SESSION_BODY),
                headers={"X-Request-Id": "trace-42"},
            ) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["X-Request-Id"] == "trace-42"
            sid = (await resp.json())["sessionid"]
            async with http.delete(f"http://{proxy}{SESSION_PATH}/id/{sid}") as deleted:
                assert deleted.status == 204
        redis_server.command("SET", "tokenrouter:active", "nope")
        await wait_until(lambda: "refused active value 'nope'" in router.output(), timeout=20)
        router.signal(signal.SIGTERM)
        assert await asyncio.to_thread(router.wait, 20) == 0
    finally:
        router.kill()
    lines = [orjson.loads(line) for line in router.output().splitlines() if line.strip()]
    access = [e for e in lines if e["logger"] == "router.access"]
    assert len(access) == 2
    # The session token is a credential: its delete is logged with a short prefix only.
    assert sid not in router.output()
    assert access[1]["path"] == f"{SESSION_PATH}/id/{sid[:6]}..."
    assert access[0] | {"duration_ms": 0, "time": 0, "pid": 0, "remote": ""} == {
        "time": 0,
        "level": "info",
        "logger": "router.access",
        "message": access[0]["message"],
        "pid": 0,
        "remote": "",
        "method": "POST",
        "path": SESSION_PATH,
        "status": 200,
        "system": "a",
        "duration_ms": 0,
        "request_id": "trace-42",
    }
    refused = [e for e in lines if "refused active value 'nope'" in e["message"]]
    assert refused and refused[0]["level"] == "error"


def test_loggable_path_cuts_session_tokens_only() -> None:
    assert loggable_path("/gateway/sessions/session/id/a-0123456789abcdef") == (
        "/gateway/sessions/session/id/a-0123..."
    )
    assert loggable_path("/gateway/sessions/session/id/short") == (
        "/gateway/sessions/session/id/short"
    )
    assert loggable_path("/gateway/adapter.js") == "/gateway/adapter.js"
