"""`token-router demo`: the zero-setup main job, run as the README says."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.helpers import wait_until


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


# A CLI hint: token-router (on PATH or by its path), `<python> -m router` when it is not on
# PATH (router/sandbox/demo.py: cli_command), or redis-cli.
CLI_HINT = r"^(\S*(token-router|redis-cli)|\S*python\S* -m router)\b"


def hints(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The banner's indented command lines: `curl ...` ones and the others (CLI, redis-cli)."""
    curls, others = [], []
    joined: list[str] = []
    for line in lines:  # a trailing backslash continues the command, as in a shell
        if joined and joined[-1].endswith(" \\"):
            joined[-1] = joined[-1][:-1] + line.strip()
        else:
            joined.append(line)
    for line in joined:
        text = line.strip()
        if text.startswith("curl "):
            curls.append(text)
        elif line.startswith("  ") and re.match(CLI_HINT, text):
            others.append(shlex.split(text))
    return curls, others


async def run_curl(http: aiohttp.ClientSession, line: str) -> tuple[int, dict[str, str], bytes]:
    """Do what a printed `curl` line does (the suite does not need curl itself)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-X", dest="method", default="GET")
    parser.add_argument("-H", dest="headers", action="append", default=[])
    parser.add_argument("-d", dest="data")
    parser.add_argument("-s", action="store_true")
    parser.add_argument("-i", action="store_true")
    parser.add_argument("url")
    words = [w for w in shlex.split(line)[1:] if w != "-si"]
    args = parser.parse_args(words)
    headers = dict(h.split(": ", 1) for h in args.headers)
    if args.data is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    async with http.request(args.method, args.url, data=args.data, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.parametrize("store", ["redis", "memory"])
async def test_demo_gets_a_token_switches_and_cleans_up(store: str) -> None:
    """Every command the banner prints works as printed, and nothing else is printed."""
    demo = Demo(*(["--memory"] if store == "memory" else []))
    try:
        banner = await asyncio.to_thread(demo.read_banner)
        curls, others = hints(demo.lines)
        token_curl, switch_curl, status_curl = curls
        # At 80 columns no line wraps the admin token (a copied half is a wrong credential).
        with_token = [line for line in demo.lines if banner["token"] in line]
        assert len(with_token) == 3, demo.lines  # its own line, the two API commands
        assert all(len(line) <= 80 for line in with_token), with_token
        async with aiohttp.ClientSession() as http:
            status, headers, body = await run_curl(http, token_curl)
            assert status == 200
            assert headers["X-Token-Router-System"] == "a"
            assert orjson.loads(body)["sessionid"].startswith("a-")
            status, _, body = await run_curl(http, status_curl)
            assert status == 200, body
            assert orjson.loads(body)["active"] == "a"
            if store == "memory":
                # memory:// lives inside the demo: no CLI or redis-cli hint (they would fail).
                assert banner["store"] == "memory://"
                assert others == []
                assert "switch b --config" not in "\n".join(demo.lines)
                # The reason given is the one that applies: redis-server is on PATH here.
                assert "memory:// (in-process store: --memory given)" in "\n".join(demo.lines)
            else:
                assert banner["store"].startswith("redis://127.0.0.1:")
                cli, redis_cli = others
                args = cli[3:] if cli[1:3] == ["-m", "router"] else cli[1:]
                assert args[:2] == ["switch", "b"] and redis_cli[0] == "redis-cli"
                # The printed CLI command works against the demo's own Redis, as printed.
                switched = await asyncio.to_thread(
                    subprocess.run, cli, capture_output=True, text=True, timeout=30
                )
                assert switched.returncode == 0, switched.stderr
                assert switched.stdout.startswith("switched a -> b; applied by 1/1 instances")
                status, headers, _ = await run_curl(http, token_curl)
                assert headers["X-Token-Router-System"] == "b"
                back = [*redis_cli[:-1], "a"]
                done = await asyncio.to_thread(
                    subprocess.run, back, capture_output=True, text=True, timeout=30
                )
                assert done.stdout.strip() == "OK", done.stderr
                await wait_until(lambda: system_of(http, token_curl, "a"), timeout=10)
            status, _, body = await run_curl(http, switch_curl)
            assert status == 200, body
            status, headers, _ = await run_curl(http, token_curl)
            assert headers["X-Token-Router-System"] == "b"
    finally:
        code = await asyncio.to_thread(demo.stop)
    assert code == 0
    if banner.get("redis_pid"):
        assert not pid_alive(int(banner["redis_pid"]))
    assert not Path(banner["config"]).exists()


async def system_of(http: aiohttp.ClientSession, token_curl: str, expected: str) -> bool:
    _, headers, _ = await run_curl(http, token_curl)
    return headers.get("X-Token-Router-System") == expected
