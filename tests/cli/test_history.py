"""`token-router history`: --limit, --since and --before, from outside; --since's parser."""

from __future__ import annotations

import argparse
import shlex
from datetime import datetime
from pathlib import Path

import pytest

from router.cli.history import parse_since
from tests.cli.test_cli import cli, config  # noqa: F401 (config: a fixture)
from tests.helpers import RedisServer

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("2h", NOW - 7200),
        ("7d", NOW - 7 * 86400),
        ("1.5h", NOW - 5400),
        ("2026-12-06 14:00", datetime(2026, 12, 6, 14, 0).timestamp()),
        ("2026-12-06", datetime(2026, 12, 6).timestamp()),
        ("2026-12-06T14:00:00+00:00", 1796565600.0),
    ],
)
def test_since_is_a_duration_or_a_time(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "5", "-2h", "2h ago", ""])
def test_since_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="neither a duration"):
        parse_since(text, NOW)


async def test_history_pages_as_printed(
    config: Path,  # noqa: F811
    redis_server: RedisServer,
) -> None:
    cfg = ("--config", str(config))
    for system in ("a", "b", "a", "b"):
        assert (await cli("switch", system, *cfg)).returncode == 0
    result = await cli("history", "--limit", "3", *cfg)
    assert result.returncode == 0, result.stderr
    first, *lines = result.stdout.splitlines()
    assert first.startswith("(older entries: `token-router history --before ")
    assert [line.split()[3:6] for line in lines] == [
        ["a", "->", "b"],
        ["b", "->", "a"],
        ["a", "->", "b"],
    ]
    # the printed command, as printed: the entry before those three
    command = shlex.split(first.split("`")[1])
    older = await cli(*command[1:])
    assert older.returncode == 0, older.stderr
    assert [line.split()[3:6] for line in older.stdout.splitlines()] == [["(none)", "->", "a"]]

    assert len((await cli("history", "--since", "1h", *cfg)).stdout.splitlines()) == 4
    future = await cli("history", "--since", "2999-01-01", *cfg)
    assert (future.returncode, future.stdout) == (0, "no changes recorded in that time\n")
    bad = await cli("history", "--since", "yesterday", *cfg)
    assert bad.returncode == 2 and "argument --since: 'yesterday' is neither" in bad.stderr
