"""Weak credentials are refused at start (issue 25, item 8): admin tokens by their real
entropy, not only their length, and the preview secret by a rule of its own; one line
naming the key (never the value), exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import MIN_TOKEN_BITS, build_config, token_bits
from tests.config.test_config import config_error, doc, serve_refusal
from tests.helpers import Gateway, RedisServer, router_data, write_toml

ZERO_WIDTH = "\u200b" * 16


@pytest.mark.parametrize(
    ("router", "key", "fragment"),
    [
        pytest.param({"admin_token": "a" * 16}, "router.admin_token", "too few", id="one-char"),
        pytest.param({"admin_token": "ab" * 8}, "router.admin_token", "too few", id="two-chars"),
        pytest.param({"admin_token": "abcd" * 4}, "router.admin_token", "too few", id="cycle"),
        pytest.param({"admin_token": ZERO_WIDTH}, "router.admin_token", "invisible", id="zwsp"),
        pytest.param(
            {"admin_token": "token\u00e9-0123456789"}, "router.admin_token", "non-ASCII", id="utf8"
        ),
        pytest.param(
            {"admin_token": "tab\tinside-0123456789"}, "router.admin_token", "control", id="tab"
        ),
        pytest.param(
            {"admin_tokens": {"alice": "x" * 40}}, "router.admin_tokens.alice", "too few", id="op"
        ),
        pytest.param({"preview_secret": "ab"}, "router.preview_secret", "at least 16", id="pv-ab"),
        pytest.param(
            {"preview_secret": " " * 16}, "router.preview_secret", "whitespace", id="pv-spaces"
        ),
        pytest.param({"preview_secret": "p" * 20}, "router.preview_secret", "too few", id="pv-rep"),
        pytest.param(
            {"preview_secret": "semi;colon-0123456789"},
            "router.preview_secret",
            "cookie",
            id="pv-;",
        ),
        pytest.param(
            {"preview_secret": "inner space 0123456789"},
            "router.preview_secret",
            "cookie",
            id="pv-space",
        ),
        pytest.param(
            {"preview_secret": ZERO_WIDTH}, "router.preview_secret", "invisible", id="pv-zw"
        ),
    ],
)
def test_weak_secrets_are_refused_naming_the_key(
    router: dict[str, str], key: str, fragment: str
) -> None:
    error = config_error(doc(router))
    assert error.key == key
    assert fragment in str(error)
    for value in router.values():
        if isinstance(value, str):
            assert value not in str(error)


def test_a_preview_secret_file_is_named_as_the_file(tmp_path: Path) -> None:
    path = tmp_path / "preview"
    path.write_text("short\n")
    assert config_error(doc({"preview_secret_file": str(path)})).key == "router.preview_secret_file"


@pytest.mark.parametrize(
    "value",
    ["test-admin-token", "correct horse battery staple", "0123456789abcdef-strong", "Zq8!vN2#" * 2],
)
def test_real_tokens_pass(value: str) -> None:
    assert token_bits(value) >= MIN_TOKEN_BITS
    assert build_config(doc({"admin_token": value}), {}).router.admin_token is not None


def test_serve_refuses_a_weak_token_in_one_line(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    data = router_data(redis_server.url, gateways, admin_token="a" * 16)
    path = write_toml(tmp_path / "router.toml", data)
    line = serve_refusal(path)
    assert "router.admin_token" in line and "a" * 16 not in line
