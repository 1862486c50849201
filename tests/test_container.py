"""The container files, checked offline: no Docker engine runs where the tests run.

What a linter cannot know is checked here against token-router itself: every command in
compose.yaml is one `token-router` accepts, every TOKENROUTER_* variable is a real config key
with a valid value, the Dockerfile copies only what the build context holds and ends in a
non-root `token-router serve` with a HEALTHCHECK, and that check works against a live router.
docker/validate.sh adds hadolint, the compose-spec schema, dclint and a rehearsal install.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from router.cli import build_parser
from router.config import build_config
from tests.helpers import (
    HOST,
    Gateway,
    RedisServer,
    RouterFactory,
    free_port,
    make_config,
    router_data,
    write_toml,
)

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "token-router:local"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*)|:\?[^}]*)?\}")
# What an operator exports for a required variable (`${VAR:?message}`).
REQUIRED_VALUES = {"TOKENROUTER_ADMIN_TOKEN": "0123456789abcdef0123456789abcdef"}


def _load_rehearse() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rehearse", ROOT / "docker" / "rehearse.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rehearse = _load_rehearse()


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def our_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE}


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, with the default (the environment is not the test's)."""
    return INTERPOLATION.sub(lambda m: m.group(2) or REQUIRED_VALUES.get(m.group(1), ""), value)


def dockerfile() -> list[tuple[str, str]]:
    result: list[tuple[str, str]] = rehearse.instructions()
    return result


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), arguments
    return value


# --- compose.yaml ------------------------------------------------------------------------


def test_compose_has_redis_router_and_two_simulated_systems() -> None:
    services = compose()["services"]
    assert "redis" in services
    commands = sorted(s["command"][0] for s in our_services().values())
    assert commands == ["serve", "simulate-gateway", "simulate-gateway"]
    for service in our_services().values():
        assert service["build"]["context"] == "."


@pytest.mark.parametrize("name", sorted(our_services()))
def test_compose_command_is_accepted_by_token_router(name: str) -> None:
    command = our_services()[name]["command"]
    # The parser token-router runs: unknown options or bad values would exit 2 here.
    args = build_parser().parse_args(command)
    assert args.command == command[0]


@pytest.mark.parametrize("name", sorted(our_services()))
def test_compose_command_help_runs_from_the_console_script(name: str) -> None:
    command = our_services()[name]["command"][0]
    done = subprocess.run(
        [sys.executable, "-m", "router", command, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert command in done.stdout


def test_compose_environment_is_a_valid_configuration() -> None:
    env = {k: interpolate(str(v)) for k, v in our_services()["router"]["environment"].items()}
    assert all(k.startswith("TOKENROUTER_") for k in env)
    config = build_config({}, env)  # raises ConfigError naming any unknown or bad key
    assert set(config.systems) == {"a", "b"}
    assert config.router.listen == "0.0.0.0:8080"
    assert config.router.admin_listen == "0.0.0.0:8081"
    assert config.router.redis_url.startswith("redis://redis:")
    # Each system's gateway is the compose service of that simulated system, at its port.
    services = compose()["services"]
    for sid, system in config.systems.items():
        host_port = system.gateway.split("//", 1)[1]
        host, _, port = host_port.partition(":")
        args = build_parser().parse_args(services[host]["command"])
        assert (args.command, args.name, args.port) == ("simulate-gateway", sid, int(port))
        assert system.version == args.version


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping}"


def test_compose_stop_grace_covers_the_drain() -> None:
    router = our_services()["router"]
    grace = int(str(router["stop_grace_period"]).rstrip("s"))
    config = build_config({}, {k: interpolate(str(v)) for k, v in router["environment"].items()})
    assert grace > config.router.shutdown_timeout


# --- Dockerfile and .dockerignore -------------------------------------------------------


def test_dockerfile_base_is_slim_python_311() -> None:
    bases = [rest.split()[0] for keyword, rest in dockerfile() if keyword == "FROM"]
    assert bases and all(re.fullmatch(r"python:3\.11-slim(-\w+)?", base) for base in bases)


def test_dockerfile_runs_as_non_root() -> None:
    users = [rest for keyword, rest in dockerfile() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_entrypoint_is_token_router_serve() -> None:
    final = {keyword: rest for keyword, rest in dockerfile()}
    assert exec_form(final["ENTRYPOINT"]) == ["token-router"]
    assert exec_form(final["CMD"]) == ["serve"]
    assert final["STOPSIGNAL"] == "SIGTERM"


def test_dockerfile_healthcheck_runs_the_healthcheck_script() -> None:
    checks = [rest for keyword, rest in dockerfile() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD")
    assert "--interval=" in options and "--timeout=" in options
    argv = exec_form(command.strip())
    assert argv[0] == "python" and argv[1].endswith("/healthcheck.py")
    copied = [shlex.split(rest) for keyword, rest in dockerfile() if keyword == "COPY"]
    assert ["docker/healthcheck.py", argv[1]] in copied


def test_every_copy_source_is_in_the_build_context() -> None:
    files = rehearse.context_files()
    for keyword, rest in dockerfile():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        for source in shlex.split(rest)[:-1]:
            source = source.rstrip("/")
            assert any(f == source or f.startswith(source + "/") for f in files), source


def test_build_context_holds_no_secrets_tests_or_caches() -> None:
    files = rehearse.context_files()
    assert "router/cli/__init__.py" in files and "static/admin.css" in files
    for path in files:
        assert not path.startswith((".git/", "tests/", "bench/", ".venv/")), path
        assert "__pycache__" not in path and not path.endswith((".pyc", ".toml.local"))
        assert Path(path).name != "router.toml", "a local router.toml would ship its secrets"


def test_dockerignore_matching_follows_docker_rules() -> None:
    patterns = [(True, "*"), (False, "router"), (True, "**/__pycache__")]
    assert rehearse.in_context("router/cli/__init__.py", patterns)
    assert not rehearse.in_context("tests/test_x.py", patterns)
    assert not rehearse.in_context("router/__pycache__/cli.pyc", patterns)
    assert not rehearse.in_context("Dockerfile", patterns)


# --- the HEALTHCHECK script against a live router -----------------------------------------


def run_healthcheck(config_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"TOKENROUTER_CONFIG": str(config_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(ROOT / "docker" / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_healthcheck_script_passes_on_a_live_router_and_fails_without(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
) -> None:
    port = free_port()
    running = await routers(make_config(redis_server.url, gateways, admin_listen=f"{HOST}:{port}"))
    assert running.admin_url.endswith(f":{port}")
    path = write_toml(
        tmp_path / "router.toml",
        router_data(redis_server.url, gateways, admin_listen=f"{HOST}:{port}"),
    )
    # subprocess.run would block the loop the router runs on: run it in a thread.
    healthy = await asyncio.to_thread(run_healthcheck, path)
    assert healthy.returncode == 0, healthy.stderr
    await running.server.stop()
    routers.routers.remove(running)
    down = await asyncio.to_thread(run_healthcheck, path)
    assert down.returncode == 1
    assert "healthz" in down.stderr


def test_healthcheck_script_reports_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "router.toml"
    bad.write_text("[router]\nlisten = 'nowhere'\n", encoding="utf-8")
    done = run_healthcheck(bad)
    assert done.returncode == 1
    assert "bad configuration" in done.stderr


def test_compose_redis_persists_and_release_dir_is_a_volume() -> None:
    doc = compose()
    redis = doc["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "--save" not in command or command[command.index("--save") + 1] != ""
    named = {str(v).split(":", 1)[0]: str(v).split(":", 1)[1] for v in redis["volumes"]}
    assert named.get("redis-data") == "/data"
    assert "redis-data" in doc["volumes"]
    router = our_services()["router"]
    release_dir = str(router["environment"]["TOKENROUTER_RELEASE_DIR"])
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in router["volumes"]}
    assert release_dir in mounts and mounts[release_dir] in doc["volumes"]
    # The router's file system is read-only: the archive must be the mounted volume.
    assert router["read_only"] is True


def test_dockerfile_release_dir_is_a_writable_volume() -> None:
    lines = dockerfile()
    volumes = " ".join(rest for keyword, rest in lines if keyword == "VOLUME")
    assert "/var/lib/token-router/releases" in volumes
    env = " ".join(rest for keyword, rest in lines if keyword == "ENV")
    assert "TOKENROUTER_RELEASE_DIR=/var/lib/token-router/releases" in env
    runs = " ".join(rest for keyword, rest in lines if keyword == "RUN")
    assert "chown 10001:10001 /var/lib/token-router/releases" in runs


def test_dockerfile_installs_only_from_the_lock() -> None:
    """The image gets the versions scripts/test proved, file for file: every `pip install` of
    a requirements file is a hash-checked lock without dependency resolution, and the project
    itself goes in without dependencies (they are the lock's)."""
    runs = [rest for keyword, rest in dockerfile() if keyword == "RUN"]
    installs = [part for run in runs for part in run.split("&&") if " install " in f" {part} "]
    assert installs, "the Dockerfile installs nothing"
    locks = set()
    for install in installs:
        argv = shlex.split(install.replace("\\\n", " "))
        assert "--no-deps" in argv, install
        if "-r" in argv:
            assert "--require-hashes" in argv, install
            locks.add(argv[argv.index("-r") + 1])
        else:
            assert any(a.endswith(".whl") for a in argv), f"not a lock, not the wheel: {install}"
    assert locks == {"requirements/runtime.txt", "requirements/build.txt"}
