"""The README cannot drift from the code: config keys, environment names, CI command."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from router.cli import build_parser
from router.config import RouterConfig, SystemConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def table_rows() -> dict[str, str]:
    rows = {}
    for line in README.splitlines():
        m = re.match(
            r"^\| `((?:router|systems\.<id>)\.[a-z_]+)` \| [^|]+ \| `([A-Z_<>]+)` \|", line
        )
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_config_key_is_documented_with_its_environment_name() -> None:
    rows = table_rows()
    expected = {f"router.{f.name}": f"TOKENROUTER_{f.name.upper()}" for f in fields(RouterConfig)}
    # A table: one variable per operator.
    expected["router.admin_tokens"] = "TOKENROUTER_ADMIN_TOKENS_<NAME>"
    expected |= {
        f"systems.<id>.{f.name}": f"TOKENROUTER_SYSTEMS_<ID>_{f.name.upper()}"
        for f in fields(SystemConfig)
        if f.name != "id"
    }
    assert rows == expected


def test_every_command_is_documented() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    assert sub.choices is not None
    for command in sub.choices:
        assert f"`{command}" in README or f"alias `{command}`" in README, command


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "exec scripts/test" in ci
    assert "\nscripts/test " in README
    assert "python3 -m pip install . && token-router demo" in README
