"""`token-router status` while Redis is away: it asks the routers' admin API what each routes
on (router.admin_listen, or --router URL) and exits 4 (degraded), instead of exit 2."""

from __future__ import annotations

from pathlib import Path

import orjson

from router.config import load_config
from tests.cli.test_cli import cli
from tests.helpers import (
    HOST,
    Gateway,
    RedisServer,
    RouterFactory,
    free_port,
    router_data,
    switch_to,
    wait_until,
    write_toml,
)


async def test_status_without_redis_asks_the_routers(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway], routers: RouterFactory
) -> None:
    data = router_data(redis_server.url, gateways)
    data["router"]["admin_listen"] = f"{HOST}:{free_port()}"  # where `status` finds it
    config = write_toml(tmp_path / "router.toml", data)
    cfg = ("--config", str(config))
    first = await routers(load_config(config, {}))
    data["router"]["admin_listen"] = f"{HOST}:0"
    second = await routers(load_config(write_toml(tmp_path / "second.toml", data), {}))
    await switch_to(redis_server, [first, second], "b")

    redis_server.stop()
    await wait_until(
        lambda: all(r.server.runtime.holder.degraded for r in (first, second)), timeout=30
    )
    result = await cli("status", *cfg)  # router.admin_listen: the first router
    assert result.returncode == 4, result
    assert "Traceback" not in result.stderr and result.stderr == ""
    out = result.stdout
    assert out.startswith(f"store    UNAVAILABLE: Redis at {redis_server.url} is unavailable")
    assert "keep routing on their last known state (fail-static)" in out
    row = next(line for line in out.splitlines() if line.startswith(first.admin_url))
    assert row.split()[1:4] == [first.server.runtime.instance, "b", "-"]
    assert "degraded for " in row
    assert "new sessions go to b on every router that answered" in out

    # --router: each router named, and one that does not answer is said so
    silent = f"http://{HOST}:{free_port()}"
    result = await cli(
        "status", "--json", "--router", first.admin_url, "--router", second.admin_url,
        "--router", silent, *cfg,
    )  # fmt: skip
    assert result.returncode == 4, result
    doc = orjson.loads(result.stdout)
    assert (doc["degraded"], doc["active"], doc["agree"]) == (True, "b", True)
    answers = {a["url"]: a for a in doc["routers"]}
    assert answers[second.admin_url]["instance"] == second.server.runtime.instance
    assert answers[second.admin_url]["degraded"] is True
    assert "error" in answers[silent] and "active" not in answers[silent]
    assert "test-admin-token" not in result.stdout

    # nobody answers: still degraded (exit 4), and what to do is said
    result = await cli("status", "--router", silent, *cfg)
    assert result.returncode == 4, result
    assert "no router answered: give their admin URLs with --router URL" in result.stdout
