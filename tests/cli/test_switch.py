"""`token-router switch`, `undo` and the rollout commands: a change is done only when every
live router instance applied it; otherwise its own exit code, the laggards named."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson

from router.cli.common import EXIT_NOT_APPLIED
from router.config import load_config
from tests.cli.test_cli import cli
from tests.helpers import (
    Gateway,
    RedisServer,
    RouterFactory,
    router_data,
    wait_until,
    write_toml,
)


def not_applied(result: subprocess.CompletedProcess[str], laggard: str) -> str:
    assert result.returncode == EXIT_NOT_APPLIED, result
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("token-router: not applied by every live router instance within ")
    assert f": {laggard} may still route on the previous state" in line, line
    return line


async def test_a_change_some_instance_did_not_apply_is_not_a_success(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway], routers: RouterFactory
) -> None:
    data = router_data(redis_server.url, gateways, confirm_timeout=0.3)
    config = write_toml(tmp_path / "router.toml", data)
    cfg = ("--config", str(config))
    router = await routers(load_config(config, {}))
    ours = router.server.runtime.instance
    await wait_until(lambda: redis_server.command("HLEN", "tokenrouter:instances") == ":1")

    result = await cli("switch", "b", *cfg)  # every instance applies it: done
    assert result.returncode == 0, result.stderr
    assert "applied by 1/1 instances" in result.stdout

    # An instance that beats but applies nothing (a stuck process, as Redis sees it).
    stuck = {"id": "stuck:1", "seen": time.time() + 600, "applied": {"generation": 0}}
    redis_server.command("HSET", "tokenrouter:instances", "stuck:1", orjson.dumps(stuck).decode())
    result = await cli("switch", "a", *cfg)
    not_applied(result, "stuck:1")
    assert "switched b -> a; applied by 1/2 instances" in result.stdout
    assert "NOT applied by stuck:1" in result.stdout
    assert ours not in result.stderr
    assert redis_server.command("GET", "tokenrouter:active").endswith("a")  # written, though

    not_applied(await cli("undo", *cfg), "stuck:1")
    result = await cli("rollout", "start", "a", "--steps", "50,100", "--interval", "60", *cfg)
    not_applied(result, "stuck:1")
    assert "rollout b -> a started: 50 % of new sessions to a" in result.stdout
    not_applied(await cli("rollout", "pause", *cfg), "stuck:1")
    not_applied(await cli("rollout", "abort", *cfg), "stuck:1")
