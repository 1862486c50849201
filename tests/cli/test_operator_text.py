"""Operator text reaches terminals and pages escaped (issue 25, item 5): a `reason` with
escape sequences and line breaks cannot clear a screen or forge an audit line, whether it
came through the CLI, the API or straight into the audit stream with redis-cli."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from router.admin.session import COOKIE
from tests.admin.test_auth import log_in
from tests.cli.test_cli import cli, config  # noqa: F401 (the fixture is used by name)
from tests.helpers import ADMIN_AUTH, RedisServer, RunningRouter

HOSTILE = "\x1b[2J\x1b[H" + "ok\n2026-01-01 00:00:00  switch b -> a  admin\u202e"
SHOWN = "\\x1b[2J\\x1b[Hok\\n2026-01-01 00:00:00  switch b -> a  admin\\u202e"


def stream(redis_server: RedisServer) -> str:
    return redis_server.command("XRANGE", "tokenrouter:audit", "-", "+")


async def test_cli_reason_is_stored_and_printed_escaped(
    config: Path,  # noqa: F811
    redis_server: RedisServer,
) -> None:
    cfg = ("--config", str(config))
    result = await cli("switch", "b", "--reason", HOSTILE, *cfg)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in stream(redis_server) and "\\x1b[2J" in stream(redis_server)
    # Written raw by anyone with Redis access: escaped when it is shown.
    redis_server.command(
        "XADD", "tokenrouter:audit", "*", "action", "switch", "from", "b", "to", "a",
        "source", "evil\x1b]0;title\x07", "time", "1700000000", "reason", HOSTILE, "forced", "",
    )  # fmt: skip
    for command in ("history", "status"):
        out = (await cli(command, *cfg)).stdout
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out, command
        assert SHOWN in out, out
        assert "evil\\x1b]0;title\\x07" in out
    history = (await cli("history", *cfg)).stdout.splitlines()
    assert len(history) == 2  # one line per entry: no forged line


async def test_api_reason_is_stored_and_answered_escaped(
    router: RunningRouter, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    body = {"system": "b", "reason": HOSTILE, "force": True}
    async with http.post(router.admin_url + "/api/switch", json=body, headers=ADMIN_AUTH) as resp:
        assert resp.status == 200, await resp.text()
    assert "\x1b" not in stream(redis_server)
    redis_server.command(
        "XADD", "tokenrouter:audit", "*", "action", "switch", "from", "b", "to", "a",
        "source", "x", "time", "1700000000", "reason", "raw\r\nline", "forced", "",
    )  # fmt: skip
    async with http.get(router.admin_url + "/api/audit", headers=ADMIN_AUTH) as resp:
        entries = (await resp.json())["entries"]
    reasons = [e["reason"] or "" for e in entries]
    assert any(SHOWN in r for r in reasons), reasons
    assert "raw\\r\\nline" in reasons
    cookie = await log_in(http, router.admin_url)
    async with http.get(router.admin_url + "/", headers={"Cookie": f"{COOKIE}={cookie}"}) as resp:
        page = await resp.text()
    assert "\x1b" not in page and "raw\r\nline" not in page and "raw\\r\\nline" in page
