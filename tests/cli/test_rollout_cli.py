"""Rollouts and guarded switching from the command line, against three real `token-router
serve` processes sharing one Redis: the CLI only starts the rollout, the routers drive it, and
killing the leading router mid-rollout does not stop it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.cli.test_cli import run
from tests.helpers import (
    START_TIMEOUT,
    Gateway,
    RedisServer,
    RouterProcess,
    free_port,
    router_data,
    wait_ready,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.timeout(180)

TIMING = {
    "heartbeat_interval": 0.2,
    "rollout_tick": 0.1,
    "leader_ttl": 0.6,
    "gate_probe_age": 0.001,
}


def bulk(reply: str) -> str | None:
    return None if reply == "$-1" else reply.split("\r\n", 1)[1]


def stored_rollout(redis_server: RedisServer) -> dict[str, Any] | None:
    raw = bulk(redis_server.command("GET", "tokenrouter:rollout"))
    return None if raw is None else orjson.loads(raw)


def instances(redis_server: RedisServer) -> dict[str, dict[str, Any]]:
    reply = redis_server.command("HGETALL", "tokenrouter:instances")
    # RESP array of bulk strings: *2n, then $len / value pairs.
    values = [line for line in reply.split("\r\n")[1:] if not line.startswith("$")]
    return {values[i]: orjson.loads(values[i + 1]) for i in range(0, len(values), 2)}


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, *args)


class Fleet:
    def __init__(self, tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]):
        self.processes: list[RouterProcess] = []
        self.admin_urls: list[str] = []
        self.config = tmp_path / "cli.toml"
        write_toml(self.config, router_data(redis_server.url, gateways, **TIMING))
        for i in range(3):
            admin = free_port()
            data = router_data(
                redis_server.url,
                gateways,
                listen=f"127.0.0.1:{free_port()}",
                admin_listen=f"127.0.0.1:{admin}",
                **TIMING,
            )
            process = RouterProcess(write_toml(tmp_path / f"router{i}.toml", data))
            self.processes.append(process)
            self.admin_urls.append(f"http://127.0.0.1:{admin}")

    async def start(self) -> None:
        for process in self.processes:
            process.start()
        try:
            # All three at once, each with the whole bound (it was 30 s, one after the other,
            # and missed under load: see START_TIMEOUT).
            await asyncio.gather(*(wait_ready(url) for url in self.admin_urls))
        except AssertionError as exc:
            logs = "\n".join(f"--- {p.log}:\n{p.output()[-2000:]}" for p in self.processes)
            raise AssertionError(f"{exc}\n{logs}") from exc

    def stop(self) -> None:
        for process in self.processes:
            process.kill()


@pytest.fixture
async def fleet(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> AsyncIterator[Fleet]:
    started = Fleet(tmp_path, redis_server, gateways)
    try:
        await started.start()
        await wait_until(lambda: len(instances(redis_server)) == 3, timeout=START_TIMEOUT)
        yield started
    finally:
        started.stop()


async def test_cli_rollout_survives_killing_the_leader(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    cfg = ("--config", str(fleet.config))
    result = await cli(
        "rollout", "start", "b", "--steps", "10,20,30,100", "--interval", "1.5", *cfg
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("rollout a -> b started: 10 % of new sessions to b; ")
    assert "applied by 3/3 instances in " in result.stdout
    # The CLI has exited: from here on, only the routers move the rollout.
    status = await cli("rollout", "status", *cfg)
    assert status.returncode == 0
    assert "rollout  a -> b  RUNNING" in status.stdout
    # The configuration's latency bounds, as the rollout document took them.
    assert "abort at 5.0% errors or a p99 over 2 s or over 3 x a's p99 after 20" in status.stdout
    assert re.search(r"step [1-4]/4 \(10, 20, 30, 100\)", status.stdout), status.stdout

    # Mid-rollout: past the first step, before the promotion.
    await wait_until(lambda: (stored_rollout(redis_server) or {}).get("step", 0) >= 1, timeout=30)
    assert (stored_rollout(redis_server) or {}).get("state") == "running"
    leader = bulk(redis_server.command("GET", "tokenrouter:leader"))
    assert leader is not None
    pid = int(instances(redis_server)[leader]["pid"])
    victim = next(p for p in fleet.processes if p.proc is not None and p.proc.pid == pid)
    os.kill(pid, signal.SIGKILL)  # the leader dies mid-rollout, lock and all
    assert victim.wait(timeout=10) == -signal.SIGKILL

    # Another instance takes the lock over and finishes the job.
    await wait_until(
        lambda: bulk(redis_server.command("GET", "tokenrouter:leader")) not in (None, leader),
        timeout=30,
    )
    await wait_until(
        lambda: (stored_rollout(redis_server) or {}).get("state") == "promoted", timeout=60
    )
    assert bulk(redis_server.command("GET", "tokenrouter:active")) == "b"
    # The dead instance drops out of the fleet after a few missed beats.
    await wait_until(lambda: leader not in instances(redis_server), timeout=20)

    history = await cli("history", "--json", "--count", "50", *cfg)
    entries = orjson.loads(history.stdout)
    steps = [e for e in entries if e["action"] == "rollout-step"]
    assert [e["reason"].split(":")[0] for e in reversed(steps)] == [
        "step 2/4",
        "step 3/4",
        "step 4/4",
    ]  # each step once, although the leader changed in the middle
    assert len([e for e in entries if e["action"] == "promote"]) == 1

    doc = orjson.loads((await cli("status", "--json", *cfg)).stdout)
    assert doc["active"] == "b"
    assert doc["rollout"]["state"] == "promoted"
    assert len(doc["instances"]) == 2
    assert all(i["current"] for i in doc["instances"])


async def test_cli_switch_expect_undo_and_exit_codes(
    fleet: Fleet, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    cfg = ("--config", str(fleet.config))
    result = await cli("switch", "b", "--expect", "b", *cfg)
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "token-router: refused by gate expect: the active system is a, not b: someone else "
        "changed it; look again and retry"
    )
    result = await cli("switch", "b", "--expect", "a", "--reason", "upgrade", *cfg)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("switched a -> b; applied by 3/3 instances in ")
    assert first.endswith(" ms")
    result = await cli("undo", *cfg)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("undone: b -> a; applied by 3/3 instances in ")

    await gateways["b"].stop()
    result = await cli("switch", "b", *cfg)
    assert result.returncode == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("token-router: refused by gate health: b's gateway did not answer")
    assert line.endswith("(override with --force)")
    result = await cli("switch", "b", "--force", "--reason", "maintenance", *cfg)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("forced past: health: ")
    history = orjson.loads((await cli("history", "--json", *cfg)).stdout)
    assert history[0]["forced"] is True and history[0]["source"].startswith("cli (")

    # Bad input: one line, exit 2, nothing written.
    before = redis_server.command("XLEN", "tokenrouter:audit")
    for args, message in (
        (("rollout", "start", "zz", "--steps", "5", "--interval", "1"), "unknown system 'zz'"),
        (("rollout", "start", "a", "--steps", "5,5", "--interval", "1"), "steps must increase"),
        (("rollout", "start", "a", "--steps", "0,5", "--interval", "1"), "outside 1..100"),
        (("rollout", "start", "a", "--steps", "5", "--interval", "0"), "interval"),
        (
            ("rollout", "start", "a", "--steps", "5", "--interval", "1", "--latency-factor", "0.5"),
            "latency_factor: 0.5 must be 0 (off) or 1 to 1000",
        ),
        (
            ("rollout", "start", "a", "--steps", "5", "--interval", "1", "--max-latency", "-1"),
            "max_latency",
        ),
        (("rollout", "abort"), "no rollout is running"),
        (("rollout", "promote"), "no rollout is running"),
        (("switch", "b", "--expect", "zz"), "unknown system 'zz'"),
    ):
        result = await cli(*args, *cfg)
        assert result.returncode == 2, (args, result)
        assert "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert message in line, (args, line)
    assert redis_server.command("XLEN", "tokenrouter:audit") == before
    assert redis_server.command("EXISTS", "tokenrouter:rollout") == ":0"


def watch(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "router", "status", "--watch", "--interval", "0.2", *extra]
        + ["--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")},
    )


async def test_status_watch_redraws_and_stops_cleanly(fleet: Fleet) -> None:
    # Ctrl-C: exit 0, no traceback.
    proc = watch(fleet.config)
    assert proc.stdout is not None and proc.stderr is not None
    frames = 0
    lines: list[str] = []
    while frames < 2:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line, proc.stderr.read()
        lines.append(line)
        frames += line.startswith("--- ")
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    text = "".join(lines)
    assert "active   a" in text and "instances: 3 live, all on the current state" in text

    # A reader that goes away (`| head`): no traceback either.
    proc = watch(fleet.config, "--json")
    assert proc.stdout is not None and proc.stderr is not None
    doc = orjson.loads(await asyncio.to_thread(proc.stdout.readline))
    assert doc["active"] == "a" and len(doc["instances"]) == 3
    proc.stdout.close()
    await asyncio.to_thread(proc.wait, 20)
    err = proc.stderr.read()
    proc.stderr.close()
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert proc.returncode == 141  # a closed pipe ends every command alike (cli.main)


async def test_watch_on_a_terminal_redraws_in_place(fleet: Fleet) -> None:
    """On a terminal: cursor home and clear-to-end-of-line per frame, the screen cleared
    once (no flicker); `rollout status --watch` likewise; Ctrl-C restores the cursor."""
    import pty

    for command in (["status"], ["rollout", "status"]):
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", *command, "--watch", "--interval", "0.2"]
            + ["--config", str(fleet.config)],
            stdout=secondary,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")},
        )
        os.close(secondary)
        seen = b""
        while seen.count(b"\x1b[H") < 3:
            chunk = await asyncio.to_thread(os.read, primary, 65536)
            assert chunk, "the watch stopped drawing"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(proc.communicate, None, 20)
        with contextlib.suppress(OSError):
            while chunk := os.read(primary, 65536):
                seen += chunk
        os.close(primary)
        assert proc.returncode == 0, err
        assert b"Traceback" not in err
        assert seen.count(b"\x1b[2J") == 1  # cleared once, then redrawn in place
        assert b"\x1b[K" in seen and b"\x1b[?25l" in seen and b"\x1b[?25h" in seen
        assert b"(Ctrl-C to stop)" in seen
        assert (b"rollout  none" if command == ["rollout", "status"] else b"active   a") in seen
