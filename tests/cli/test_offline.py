"""`token-router offline` / `online`: the same gates as the API and the page, from outside."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from router.config import load_config
from tests.cli.test_cli import cli, config, refused_line  # noqa: F401 (config: a fixture)
from tests.helpers import RedisServer, RouterFactory, new_token


async def test_offline_of_a_system_holding_calls_is_refused_unless_forced(
    config: Path,  # noqa: F811
    redis_server: RedisServer,
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    cfg = ("--config", str(config))
    router = await routers(load_config(config, {}))
    await new_token(http, router)
    await router.server.runtime.affinity.flush()  # its record reaches Redis behind the answer
    assert (await cli("switch", "b", *cfg)).returncode == 0

    # a's gateway counts its open session (stats_url): the count decides, as in drain-wait
    line = refused_line(await cli("offline", "a", *cfg), "open")
    assert "a still holds 1 open session(s) and short code(s) (gateway count)" in line
    assert line.endswith("(override with --force)")
    assert redis_server.command("SCARD", "tokenrouter:offline") == ":0"

    forced = await cli("offline", "a", "--force", "--reason", "broken", *cfg)
    assert forced.returncode == 0, forced.stderr
    assert "a is offline" in forced.stdout
    history = (await cli("history", *cfg)).stdout.splitlines()
    assert "a offline" in history[-1] and "FORCED" in history[-1], history
    assert "broken (forced past open: a still holds 1" in history[-1]
    # already offline: nothing to refuse, nothing recorded twice
    assert (await cli("offline", "a", *cfg)).returncode == 0
    assert len((await cli("history", *cfg)).stdout.splitlines()) == len(history)
    assert (await cli("online", "a", *cfg)).returncode == 0


async def test_offline_of_a_drained_system_needs_no_force(
    config: Path,  # noqa: F811
    redis_server: RedisServer,
) -> None:
    cfg = ("--config", str(config))
    assert (await cli("switch", "b", *cfg)).returncode == 0
    result = await cli("offline", "a", *cfg)
    assert result.returncode == 0, result.stderr
    assert redis_server.command("SISMEMBER", "tokenrouter:offline", "a") == ":1"
