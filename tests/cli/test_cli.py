"""The command line as an operator uses it: real processes, exit statuses, one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from router.cli import build_parser
from tests.helpers import (
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    free_port,
    router_data,
    write_toml,
)


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(env),
        cwd=cwd,
    )


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without TOKENROUTER_* settings (the tests' own config rules)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")},
        **(extra or {}),
    }


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]) -> Path:
    data = router_data(redis_server.url, gateways)
    data["systems"]["a"]["stats_url"] = gateways["a"].url + "/stats"
    return write_toml(tmp_path / "router.toml", data)


@pytest.mark.parametrize(
    "command",
    [
        "serve",
        "demo",
        "status",
        "switch",
        "flip",
        "drain-wait",
        "offline",
        "online",
        "history",
        "simulate-gateway",
    ],
)
def test_every_command_has_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert "usage: token-router" in result.stdout


def _command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command and subcommand the parser knows, e.g. ("rollout", "promote")."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


def test_help_of_every_command_and_subcommand_renders() -> None:
    """In process, each one's --help as argparse formats it: a help string with a bare `%`
    (`rollout promote`'s "100 %: ...") crashed `token-router rollout --help` with a
    ValueError, unseen because only the top-level commands were tried."""
    paths = _command_paths(build_parser())
    assert ("rollout", "promote") in paths and ("releases", "refresh") in paths
    for path in [(), *paths]:
        with pytest.raises(SystemExit) as done, contextlib.redirect_stdout(io.StringIO()) as out:
            build_parser().parse_args([*path, "--help"])
        assert done.value.code == 0, path
        assert out.getvalue().startswith("usage: token-router"), path


def test_top_level_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "demo", "status", "switch", "drain-wait", "simulate-gateway"):
        assert command in result.stdout


def test_bad_config_key_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[router]\nlisten = "nowhere"\n[systems.a]\ngateway = "http://x:1"\n'
        'public_url = "https://a.example.com"\n'
    )
    line = one_line_error(run("status", "--config", str(path)))
    assert line == (
        "token-router: error: router.listen: 'nowhere' is not host:port (e.g. 127.0.0.1:8080)"
    )
    path.write_text(
        '[router]\nlisten_port = 1\n[systems.a]\ngateway = "http://x:1"\n'
        'public_url = "https://a.example.com"\n'
    )
    assert "router.listen_port: unknown key" in one_line_error(run("serve", "--config", str(path)))


def test_missing_config_file_and_bad_env(tmp_path: Path) -> None:
    line = one_line_error(run("switch", "b", "--config", str(tmp_path / "nope.toml")))
    assert "--config: file" in line and "does not exist" in line
    env = {
        "TOKENROUTER_SYSTEMS_A_GATEWAY": "http://127.0.0.1:1",
        "TOKENROUTER_SYSTEMS_A_PUBLIC_URL": "https://a.example.com",
        "TOKENROUTER_READ_TIMEOUT": "soon",
    }
    line = one_line_error(run("status", env=env))
    assert "router.read_timeout: 'soon' is not a number of seconds" in line


def test_bad_arguments_are_one_line() -> None:
    line = one_line_error(run("serve", "--workers", "0"))
    assert "--workers" in line
    line = one_line_error(run("frobnicate"))
    assert "invalid choice" in line


def test_switch_unknown_system(config: Path) -> None:
    line = one_line_error(run("switch", "c", "--config", str(config)))
    assert line == "token-router: error: unknown system 'c'; configured systems: a, b"


def test_switch_with_redis_unreachable(config: Path, redis_server: RedisServer) -> None:
    redis_server.stop()
    line = one_line_error(run("switch", "b", "--config", str(config)))
    assert line.startswith(f"token-router: error: Redis at {redis_server.url} is unavailable")


def refused_line(result: subprocess.CompletedProcess[str], gate: str) -> str:
    """A gate's refusal: exit 3, one line naming the gate (SPEC section 1)."""
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"token-router: refused by gate {gate}: "), lines[0]
    return lines[0]


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """In a thread: the simulated systems answer the gates' probes from this test's loop."""
    return await asyncio.to_thread(run, *args)


async def test_switch_status_history_offline_online(
    config: Path, redis_server: RedisServer
) -> None:
    cfg = ("--config", str(config))
    result = await cli("switch", "b", *cfg)
    assert result.returncode == 0, result.stderr
    assert "switched (none) -> b; no live router instance registered" in result.stdout
    assert (await cli("flip", "a", *cfg)).returncode == 0
    assert redis_server.command("GET", "tokenrouter:active").endswith("a")
    status = await cli("status", *cfg)
    assert status.returncode == 0, status.stderr
    assert "active   a" in status.stdout
    assert "switch b -> a" in status.stdout
    history = await cli("history", *cfg)
    assert [line.split()[3:6] for line in history.stdout.splitlines()] == [
        ["(none)", "->", "b"],
        ["b", "->", "a"],
    ]
    assert "cli (" in history.stdout

    line = refused_line(await cli("offline", "a", *cfg), "active")
    assert "a is the active system" in line and "override with --force" in line
    assert (await cli("offline", "b", *cfg)).returncode == 0
    line = refused_line(await cli("switch", "b", *cfg), "offline")
    assert "bring it online first" in line
    assert (await cli("online", "b", *cfg)).returncode == 0
    assert (await cli("switch", "b", *cfg)).returncode == 0


async def test_status_json_and_refused_value(config: Path, redis_server: RedisServer) -> None:
    cfg = ("--config", str(config))
    assert (await cli("switch", "b", *cfg)).returncode == 0
    redis_server.command("SET", "tokenrouter:active", "zz")
    result = await cli("status", *cfg)
    assert "REFUSED  active holds 'zz' (unknown)" in result.stdout
    assert "routers stay on 'b'" in result.stdout
    # Not 0: a script or monitor must see that an operator has to act (docs/operations.md).
    assert result.returncode == 4, result.stderr
    as_json = await cli("status", "--json", *cfg)
    assert as_json.returncode == 4
    doc = orjson.loads(as_json.stdout)
    assert doc["active"] == "b"
    assert doc["refused"] == {"value": "zz", "reason": "unknown"}
    assert doc["systems"][0]["gateway_open"] == 0  # from a's stats_url
    assert doc["systems"][0]["health"]["ok"] is True
    redis_server.command("SET", "tokenrouter:active", "b")
    assert (await cli("status", *cfg)).returncode == 0


def test_memory_store_is_explained(tmp_path: Path, gateways: dict[str, Gateway]) -> None:
    path = write_toml(tmp_path / "m.toml", router_data("memory://", gateways))
    line = one_line_error(run("switch", "b", "--config", str(path)))
    assert "memory://" in line and "/api/switch" in line


def test_simulate_gateway_port_in_use(redis_server: RedisServer) -> None:
    line = one_line_error(run("simulate-gateway", "--port", str(redis_server.port)))
    assert "cannot listen on 127.0.0.1" in line


def test_free_port_helper_is_loopback() -> None:
    assert 0 < free_port() < 65536


async def test_drain_wait_times_out_then_succeeds(
    config: Path, redis_server: RedisServer, gateways: dict[str, Gateway], routers: RouterFactory
) -> None:
    import aiohttp

    from router.config import load_config

    router = await routers(load_config(config, {}))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)
        ) as resp:
            sid = (await resp.json())["sessionid"]
        await router.server.runtime.affinity.flush()  # its record reaches Redis behind the answer
        cfg = ("--config", str(config))
        assert (await asyncio.to_thread(run, "switch", "b", *cfg)).returncode == 0
        waited = await asyncio.to_thread(
            run, "drain-wait", "a", "--timeout", "1", "--interval", "0.2", *cfg
        )
        assert waited.returncode == 1
        assert "a: draining, 1 open (gateway), router count 1" in waited.stdout
        assert "timed out after 1 s" in waited.stderr

        # The token is deleted only once drain-wait has reported it open: however slowly the
        # process starts, its first report sees one open item.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "drain-wait",
            "a",
            "--timeout",
            "30",
            "--interval",
            "0.2",
            *cfg,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=clean_env(),
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            first = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert "a: draining, 1 open" in first.decode()
            async with http.delete(
                router.proxy_url + f"/gateway/sessions/session/id/{sid}"
            ) as resp:
                assert resp.status == 204
            rest, err = await asyncio.wait_for(proc.communicate(), timeout=40)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "a is drained" in rest.decode()


@pytest.mark.parametrize(
    "args",
    [
        ("demo", "--port", "70000"),
        ("demo", "--admin-port", "65536"),
        ("demo", "--port", "-1"),
        ("simulate-gateway", "--port", "70000"),
    ],
)
def test_a_port_out_of_range_is_refused_not_wrapped(args: tuple[str, ...]) -> None:
    # Before: demo printed a traceback (OverflowError) and simulate-gateway listened on
    # 70000 - 65536 = 4464 without a word.
    line = one_line_error(run(*args))
    assert f"argument {args[1]}: {args[2]} is not a TCP port (0-65535" in line


def test_no_config_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    line = one_line_error(run("status", cwd=tmp_path))
    assert line == (
        "token-router: error: --config: no configuration found: no --config given, "
        f"$TOKENROUTER_CONFIG not set, and no router.toml in {tmp_path} "
        "(nor TOKENROUTER_SYSTEMS_* variables)"
    )
    line = one_line_error(run("status", env={"TOKENROUTER_CONFIG": str(tmp_path / "x.toml")}))
    assert line.startswith("token-router: error: $TOKENROUTER_CONFIG: file ")


async def test_config_from_the_environment_and_hints_that_work_as_printed(
    tmp_path: Path, config: Path
) -> None:
    env = {"TOKENROUTER_CONFIG": str(config)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert (await asyncio.to_thread(run, "switch", "b", env=env)).returncode == 0
    # A relative --config from the config's own directory: the hint names the file so that
    # it works from any directory, with no environment.
    switched = await asyncio.to_thread(
        run, "switch", "a", "--config", config.name, cwd=config.parent
    )
    assert switched.returncode == 0, switched.stderr
    hint = re.search(r"`(token-router drain-wait b [^`]+)`", switched.stdout)
    assert hint is not None, switched.stdout
    assert f"--config {config.resolve()}" in hint.group(1)
    argv = shlex.split(hint.group(1))[1:] + ["--timeout", "20"]
    waited = await asyncio.to_thread(run, *argv, cwd=elsewhere)
    assert waited.returncode == 0, waited.stderr
    assert "b is drained" in waited.stdout


@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("history",)])
async def test_a_closed_pipe_ends_quietly(config: Path, command: tuple[str, ...]) -> None:
    """`token-router status | head`: the reader is gone before anything is written."""
    cfg = ("--config", str(config))
    assert (await asyncio.to_thread(run, "switch", "b", "--config", str(config))).returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader closed its end (`head` has exited): every write fails
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "router", *command, *cfg],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            env=clean_env(),
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert result.returncode == 141  # 128 + SIGPIPE, as the shell reports a closed pipe
