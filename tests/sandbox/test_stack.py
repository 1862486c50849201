"""The local stack's parts (router/sandbox/stack.py): the TOML it writes reads back as written,
and its private redis-server starts, stops and starts again on the same port, pinned by a
command prefix when asked. Real redis-server processes, real sockets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest

from router.config import load_config
from router.errors import UsageError
from router.sandbox.stack import HOST, PrivateRedis, free_port, toml_text, write_toml
from tests.helpers import Gateway, RedisServer, router_data

TRICKY = 'quote " backslash \\ tab \t newline \n unicode é ✓ 😀 control \x01 end'


def test_toml_round_trips_strings_and_nested_tables(tmp_path: Path) -> None:
    doc: dict[str, Any] = {
        "router": {
            "admin_token": TRICKY,
            "windows_path": "C:\\Program Files\\router",
            "trusted_proxies": ["127.0.0.1", 'a"b'],
            "ratio": 0.25,
            "port": 8080,
            "access_log": False,
            "empty": {},
        },
        "systems": {"a": {"gateway": "http://a", "nested": {"deeper": "x"}}, "b": {}},
    }
    assert tomllib.loads(toml_text(doc)) == doc
    # A path is written as its text, a key set to None left out: TOML has neither.
    assert tomllib.loads(toml_text({"router": {"release_dir": tmp_path, "x": None}})) == {
        "router": {"release_dir": str(tmp_path)}
    }


def test_the_router_reads_the_file_as_written(tmp_path: Path) -> None:
    gateways = {
        "a": Gateway("a", 'v"1\\é', None, "http://127.0.0.1:9"),  # type: ignore[arg-type]
        "b": Gateway("b", "2.0", None, "http://127.0.0.1:10"),  # type: ignore[arg-type]
    }
    # A header carries the token as it is: quotes and backslashes, nothing invisible.
    token = 'a "quoted" token with a back\\slash, 0123456789'
    data = router_data("memory://", gateways, admin_token=token)
    path = tmp_path / "router.toml"
    write_toml(path, data)
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the admin token
    config = load_config(path, {})
    assert config.router.admin_token is not None
    assert config.router.admin_token.reveal() == token
    assert config.systems["a"].version == 'v"1\\é'
    assert config.systems["b"].gateway == "http://127.0.0.1:10"


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    return binary


def test_a_restart_keeps_port_and_with_appendonly_the_data(tmp_path: Path) -> None:
    redis = RedisServer(persistent=True)
    try:
        redis.start()
        port, first = redis.port, redis.pid
        redis.command("SET", "k", "v")
        assert redis.stop() == -signal.SIGKILL  # the tests' stop is a crash
        assert not redis.running and redis.pid == 0
        redis.start()
        assert (redis.port, redis.command("GET", "k")) == (port, "$1\r\nv")
        assert redis.pid != first
    finally:
        redis.cleanup()


def test_without_appendonly_a_restart_comes_back_empty(tmp_path: Path) -> None:
    redis = PrivateRedis(redis_binary(), tmp_path, appendonly=False)
    try:
        redis.start()
        with socket.create_connection((HOST, redis.port)) as sock:
            sock.sendall(b"SET k v\r\n")
            assert sock.recv(16) == b"+OK\r\n"
        redis.restart()
        with socket.create_connection((HOST, redis.port)) as sock:
            sock.sendall(b"EXISTS k\r\n")
            assert sock.recv(16) == b":0\r\n"
        assert list(tmp_path.iterdir()) == []  # nothing on disk
    finally:
        assert redis.stop() == 0  # SIGTERM by default: a clean exit


def test_a_chosen_port_a_pinning_prefix_and_a_log(tmp_path: Path) -> None:
    if shutil.which("taskset") is None:
        pytest.skip("no taskset (util-linux)")
    cpu = min(os.sched_getaffinity(0))
    port = free_port()
    redis = PrivateRedis(
        redis_binary(),
        tmp_path,
        port=port,
        prefix=["taskset", "-c", str(cpu)],
        extra=["--loglevel", "notice"],  # after the defaults, so it wins
        log=tmp_path / "redis.log",
    )
    try:
        redis.start()
        assert redis.url == f"redis://{HOST}:{port}/0"
        # taskset execs redis-server: the PID is redis-server's, pinned to the one CPU.
        assert Path(f"/proc/{redis.pid}/comm").read_text().strip() == "redis-server"
        assert os.sched_getaffinity(redis.pid) == {cpu}
        assert "Ready to accept connections" in (tmp_path / "redis.log").read_text()
    finally:
        redis.stop()


def test_a_start_on_a_taken_port_fails_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        redis = PrivateRedis(redis_binary(), tmp_path, port=holder.getsockname()[1])
        with pytest.raises(UsageError, match="did not start"):
            redis.start()
        assert redis.proc is None


async def test_started_and_stopped_from_the_event_loop(tmp_path: Path) -> None:
    redis = PrivateRedis(redis_binary(), tmp_path)
    await redis.start_async()
    try:
        pid = redis.pid
        assert redis.running
        with pytest.raises(UsageError, match="already runs"):
            await redis.start_async()
    finally:
        assert await redis.stop_async() == 0
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
