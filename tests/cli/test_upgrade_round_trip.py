"""The full cycle, guided: `upgrade b --offline-old`, then the next steps it prints, run as
printed (A upgraded, `online a`, `releases refresh`, `upgrade a`), against a real Redis, a
router on sockets and simulated systems."""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from router.state.redis_store import RedisStore
from tests.cli.test_upgrade import ENV, mint, setup, state_of, upgrade  # noqa: F401 (setup)
from tests.helpers import (
    SESSION_PATH,
    Gateway,
    RedisServer,
    RunningRouter,
    new_token,
    wait_until,
)


def next_steps(out: str) -> dict[int, str]:
    """The numbered next steps the upgrade printed: {number: the line}."""
    head = out.index("next, to bring new sessions back to ")
    return {
        int(m.group(1)): m.group(2)
        for m in re.finditer(r"^  (\d)\. (.+)$", out[head:].split("time per step:")[0], re.M)
    }


async def as_printed(line: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """A printed `token-router ...` command (its explanation in parentheses dropped)."""
    command = shlex.split(line.split("   (")[0])
    assert command[0] == "token-router", line
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "router", *command[1:], *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )


async def test_upgrade_b_then_back_to_a_as_guided(
    setup: tuple[Path, RunningRouter, RedisStore],  # noqa: F811
    gateways: dict[str, Gateway],
) -> None:
    config, router, store = setup
    hint = f"--config {config.resolve()}"
    async with aiohttp.ClientSession() as http:
        sid = await mint(http, router)  # a call on a: the drain waits for it
        first = asyncio.create_task(
            upgrade(config, "b", "--yes", "--offline-old", "--steps", "100")
        )
        await wait_until(lambda: router.active == "b", timeout=60)
        async with http.delete(router.proxy_url + f"{SESSION_PATH}/id/{sid}") as resp:
            assert resp.status == 204
        code, out, err = await first
        assert code == 0, out + err
        assert "upgrade done: new sessions go to b; a is offline for its own upgrade" in out
        steps = next_steps(out)
        assert out.count("next, to bring new sessions back to a (or stay on b") == 1
        assert steps[1].startswith("upgrade a itself: it holds no calls")
        assert steps[2] == f"token-router online a {hint}"
        assert steps[3].startswith(f"token-router releases refresh --system a {hint}")
        assert steps[4].startswith(f"token-router upgrade a {hint}")
        assert await state_of(store) == ("b", frozenset({"a"}), len(await store.audit(100)))

        # Skipping `online a` is refused with the way forward, nothing changed.
        code, out, err = await upgrade(config, "a", "--yes")
        assert code == 3 and "bring it back with `token-router online a`" in err, out + err

        # 1. A is upgraded (the simulated system now serves other library bytes).
        async with http.post(gateways["a"].url + "/_sim/version", json={"version": "3.0"}) as r:
            assert r.status == 200
        # 2.-3. as printed
        done = await as_printed(steps[2])
        assert done.returncode == 0 and "a is online again" in done.stdout, done
        done = await as_printed(steps[3])
        assert done.returncode == 0, done
        assert re.match(r"a: [0-9a-f]{16} \(.*\), .*: new release \(before: ", done.stdout)
        new_release = done.stdout.split()[1]
        # 4. as printed (--yes: no terminal here to confirm on)
        back = await as_printed(steps[4], "--yes", "--steps", "100")
        assert back.returncode == 0, back.stdout + back.stderr
        assert back.stdout.startswith("upgrade b -> a\n")
        assert f"[ok  ] release stored: release {new_release}, 9 files" in back.stdout
        assert "upgrade done: new sessions go to a; b is drained" in back.stdout
        assert "next, to bring new sessions back to b (or stay on a: nothing to do)" in back.stdout
        active, offline, _ = await state_of(store)
        assert (active, offline) == ("a", frozenset())
        await wait_until(lambda: router.active == "a")
        _, system = await new_token(http, router)
        assert system == "a"
        async with http.get(router.proxy_url + "/router/current") as resp:
            current = await resp.json()
        assert (current["system"], current["release"]) == ("a", new_release)

        # Running it again: done, and the way back is printed again.
        again = await as_printed(steps[4], "--yes")
        assert again.returncode == 0 and "the upgrade to a is already done" in again.stdout
        assert "next, to bring new sessions back to b" in again.stdout


async def test_a_switch_some_instance_did_not_apply_stops_the_upgrade(
    setup: tuple[Path, RunningRouter, RedisStore],  # noqa: F811
    redis_server: RedisServer,
) -> None:
    config, router, store = setup
    generation = (await store.read_state()).generation
    # An instance that beats but applies nothing new (a stuck process, as Redis sees it).
    stuck = {"id": "stuck:1", "seen": time.time() + 600, "applied": {"generation": generation}}
    redis_server.command("HSET", "tokenrouter:instances", "stuck:1", orjson.dumps(stuck).decode())
    code, out, err = await upgrade(config, "b", "--yes", "--steps", "100")
    assert code == 3, out + err
    assert "[ok  ] instances agree: 2 live instance(s)" in out
    assert "switch new sessions: FAILED" in out
    assert "switched, but applied by 1/2 instances" in err and "NOT applied by stuck:1" in err
    assert "resume: token-router upgrade b --config " in err
    assert (await store.read_state()).active == "b"  # written: resumed once stuck:1 is fixed
