"""The lock (requirements/*.txt, made by scripts/lock) against pyproject.toml and this venv.

A fresh machine installs exactly the lock (scripts/venv.sh, the Dockerfile); pyproject.toml
keeps honest ranges for people who install the package into an environment of their own.
These fail when the two drift apart (a dependency added to pyproject.toml without
`scripts/lock --keep`), when the locks disagree on a version, or when the environment the
suite runs in is not the one the lock describes (a stale .venv, a hand install).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(name: str) -> dict[str, tuple[str, str | None]]:
    """{canonical name: (version, marker or None)} of one lock file."""
    found: dict[str, tuple[str, str | None]] = {}
    for line in (LOCKS / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = (match[2], match[3])
    assert found, f"requirements/{name}.txt pins nothing"
    return found


def project() -> dict[str, list[Requirement]]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        "runtime": [Requirement(r) for r in doc["dependencies"]],
        "test": [Requirement(r) for r in doc["optional-dependencies"]["test"]],
    }


def test_every_lock_pins_every_file_with_a_hash() -> None:
    for lock in ("runtime", "build", "test"):
        text = (LOCKS / f"{lock}.txt").read_text(encoding="utf-8")
        entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 2)[2].strip())
        for entry in entries:
            if entry.lstrip().startswith("#"):
                continue
            assert "--hash=sha256:" in entry, f"{lock}: no hash for {entry.splitlines()[0]}"
        assert "scripts/lock" in text.splitlines()[1], f"{lock}: not made by scripts/lock"


@pytest.mark.parametrize("lock", ["runtime", "test"])
def test_the_lock_satisfies_pyproject(lock: str) -> None:
    pinned = pins(lock)
    wanted = project()["runtime"] + (project()["test"] if lock == "test" else [])
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pinned, (
            f"{requirement} is not in requirements/{lock}.txt: scripts/lock --keep"
        )
        version = pinned[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements/{lock}.txt pins {name}=={version}, outside pyproject's {requirement}"
        )


def test_the_locks_agree_on_every_version() -> None:
    test = pins("test")
    for lock in ("runtime", "build"):
        for name, (version, _) in pins(lock).items():
            assert name in test, f"{name} is in {lock}.txt but not in test.txt"
            assert test[name][0] == version, f"{lock} and test disagree on {name}"


def test_this_environment_is_the_lock() -> None:
    """What the suite runs on is what requirements/test.txt says, version for version."""
    installed: dict[str, str] = {
        canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()
    }
    for name, (version, marker) in pins("test").items():
        if marker is not None and not Marker(marker).evaluate():
            continue
        assert installed.get(name) == version, (
            f"{name}: {installed.get(name)} installed, the lock says {version} (scripts/test "
            "makes .venv anew from the lock)"
        )
