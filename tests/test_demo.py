"""`token-router demo`: the zero-setup main job, run as the README says."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.helpers import SESSION_BODY, SESSION_PATH


class Demo:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "demo", "--port", "0", "--admin-port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []

    def read_banner(self) -> dict[str, str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops everything"):
                text = "\n".join(self.lines)
                found = {
                    key: m.group(1)
                    for key in ("proxy", "admin", "store", "config")
                    if (m := re.search(rf"^  {key} +(\S+)", text, re.M))
                }
                token = re.search(r"admin token: (\S+)", text)
                assert token is not None
                found["token"] = token.group(1)
                # A strong generated token (every token needs 16+ characters).
                assert len(found["token"]) >= 32
                pid = re.search(r"redis-server, pid (\d+)", text)
                found["redis_pid"] = pid.group(1) if pid else ""
                return found
        raise AssertionError("demo did not start:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            if self.proc.stdout:
                self.proc.stdout.close()


async def test_demo_without_redis_server_says_so() -> None:
    # Only Python's own directory on PATH: no redis-server to find.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    demo = Demo(env=env)
    try:
        banner = await asyncio.to_thread(demo.read_banner)
        assert banner["store"] == "memory://"
        assert "memory:// (in-process store: no redis-server on PATH)" in "\n".join(demo.lines)
    finally:
        assert await asyncio.to_thread(demo.stop) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.mark.parametrize("store", ["redis", "memory"])
async def test_demo_gets_a_token_switches_and_cleans_up(store: str) -> None:
    demo = Demo(*(["--memory"] if store == "memory" else []))
    try:
        banner = await asyncio.to_thread(demo.read_banner)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                banner["proxy"] + SESSION_PATH,
                data=orjson.dumps(SESSION_BODY),
                headers={"Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 200
                assert resp.headers["X-Token-Router-System"] == "a"
                assert (await resp.json())["sessionid"].startswith("a-")
            async with http.post(
                banner["admin"] + "/api/switch",
                json={"system": "b"},
                headers={"Authorization": f"Bearer {banner['token']}"},
            ) as resp:
                assert resp.status == 200
            async with http.post(
                banner["proxy"] + SESSION_PATH, data=orjson.dumps(SESSION_BODY)
            ) as resp:
                assert resp.headers["X-Token-Router-System"] == "b"
        if store == "redis":
            assert banner["store"].startswith("redis://127.0.0.1:")
            # The printed CLI command works against the demo's own Redis.
            switched = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "router", "switch", "a", "--config", banner["config"]],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert switched.returncode == 0, switched.stderr
        else:
            assert banner["store"] == "memory://"
            # The reason given is the one that applies: redis-server is on PATH here.
            assert "memory:// (in-process store: --memory given)" in "\n".join(demo.lines)
    finally:
        code = await asyncio.to_thread(demo.stop)
    assert code == 0
    if banner.get("redis_pid"):
        assert not pid_alive(int(banner["redis_pid"]))
    assert not Path(banner["config"]).exists()
