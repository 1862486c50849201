"""deploy/systemd: the unit passes `systemd-analyze verify` and its offline security review,
is hardened, stops within the router's own stop time, and hands the router a configuration
and credentials it accepts.

`systemd-analyze verify` needs no running systemd (containers and CI have none), only the
binary; where it is missing those two tests are skipped, saying so. It checks that ExecStart's
program exists, so the copy it verifies names this environment's `token-router` instead of
/opt/token-router/bin/token-router; nothing else of the unit is changed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from router.cli import build_parser
from router.config import build_config

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "token-router.service"
INSTALLED = "/opt/token-router/bin/token-router"
# router/server/run.py: the admin listener gets 2 s to close after shutdown_timeout.
ADMIN_CLOSE = 2.0
MARGIN = 5.0


def entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (keys repeat in units)."""
    found: list[tuple[str, str, str]] = []
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def values(key: str) -> list[str]:
    return [v for s, k, v in entries(UNIT.read_text()) if k == key and s == "Service"]


def one(key: str) -> str:
    found = values(key)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package has it)")
    return path


def verifiable_copy(tmp_path: Path, text: str) -> Path:
    program = shutil.which("token-router")
    assert program is not None, "token-router is not on PATH (the venv's bin)"
    assert INSTALLED in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED, program), encoding="utf-8")
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze(), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    result = verify(verifiable_copy(tmp_path, UNIT.read_text()))
    assert result.returncode == 0, result.stderr
    # systemd only warns about an unknown key or a bad value: any output is a finding.
    assert result.stdout + result.stderr == ""


def test_verify_reports_a_typo(tmp_path: Path) -> None:
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=stricter")
    result = verify(verifiable_copy(tmp_path, text))
    assert "stricter" in result.stderr


def test_security_review_says_ok(tmp_path: Path) -> None:
    unit = verifiable_copy(tmp_path, UNIT.read_text())
    result = subprocess.run(
        [analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert m, result.stdout + result.stderr
    # systemd's scale: 0 (locked down) to 10 (unprotected); "OK" is below 2.
    assert float(m.group(1)) < 2.0 and m.group(2) == "OK", m.group(0)


def test_hardened() -> None:
    assert one("User") == "token-router" and one("Group") == "token-router"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert one(key) == value, key
    sysusers = (SYSTEMD / "token-router.sysusers.conf").read_text()
    assert re.search(r"^u token-router ", sysusers, re.M)
    # token-router has no reload (no SIGHUP handling): a restart applies a new configuration.
    assert not values("ExecReload")


def test_exec_start_is_a_token_router_command() -> None:
    argv = shlex.split(one("ExecStart"))
    assert argv[0] == INSTALLED
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"


def unit_environment(tmp_path: Path) -> dict[str, str]:
    """The unit's Environment= with its specifiers resolved into `tmp_path`, and each
    credential it loads written there (as systemd would copy it)."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for entry in values("LoadCredential"):
        name = entry.split(":", 1)[0]
        (credentials / name).write_text(f"{name}-sample-0123456789\n")
    env: dict[str, str] = {}
    for entry in values("Environment"):
        key, _, value = entry.partition("=")
        env[key] = value.replace("%d", str(credentials)).replace("%S", str(tmp_path))
    return env


def test_configuration_and_credentials_are_accepted(tmp_path: Path) -> None:
    env = unit_environment(tmp_path)
    (tmp_path / "token-router" / "releases").mkdir(parents=True)
    doc = tomllib.loads((SYSTEMD / "router.toml").read_text())
    config = build_config(doc, env)
    assert config.router.admin_token is not None and config.router.preview_secret is not None
    assert config.router.admin_token.reveal() == "admin-token-sample-0123456789"
    assert config.router.release_dir == str(tmp_path / "token-router" / "releases")
    # No secret in the configuration file.
    for key in ("admin_token", "preview_secret", "redis_password", "redis_sentinel_password"):
        assert key not in doc["router"]


def test_stop_timeout_covers_the_routers_stop() -> None:
    config = build_config(tomllib.loads((SYSTEMD / "router.toml").read_text()), {})
    timeout = float(one("TimeoutStopSec"))
    stop = config.router.stop_delay + config.router.shutdown_timeout + ADMIN_CLOSE
    assert timeout >= stop + MARGIN
    assert one("KillSignal") == "SIGTERM"
