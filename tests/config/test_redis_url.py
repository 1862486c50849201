"""A malformed redis_url is one line naming the key, exit 2, never a traceback and never
the URL (it may carry a password): issue 25, item 12."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import build_config
from tests.config.test_config import config_error, doc, serve_refusal
from tests.helpers import Gateway, router_data, write_toml

# Port 1 where a URL is otherwise valid: were it accepted, nothing listens there.
BAD = [
    pytest.param("redis://127.0.0.1:notaport/0", "Port could not be cast", id="port-text"),
    pytest.param("redis://127.0.0.1:99999/0", "out of range", id="port-range"),
    pytest.param("redis://127.0.0.1:1/0?db=x", "Invalid value for 'db'", id="db-query"),
    pytest.param("redis://127.0.0.1:1/x", "database number", id="db-path"),
    pytest.param("redis://:pw-secret@127.0.0.1:1/0?PassWord=", "'PassWord'", id="mixed-case"),
    pytest.param("redis://127.0.0.1:1/0?PassWord=pw-secret", "'PassWord'", id="mixed-case-set"),
    pytest.param("redis://127.0.0.1:1/0?socket_timeout=x", "socket_timeout", id="timeout"),
    pytest.param("redis://[::1/0", "IPv6", id="ipv6"),
    pytest.param("redis:///0", "no host", id="no-host"),
    pytest.param("http://127.0.0.1:1/0", "scheme", id="scheme"),
]


@pytest.mark.parametrize(("url", "fragment"), BAD)
def test_malformed_redis_url_names_the_key(url: str, fragment: str) -> None:
    error = config_error(doc({"redis_url": url}))
    assert error.key == "router.redis_url"
    assert fragment in str(error)
    assert "pw-secret" not in str(error) and url not in str(error)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://h",
        "rediss://user:pw@h:6380/2?ssl_cert_reqs=none",
        "redis://h:6379/0?password=x&db=1",
        "unix:///run/redis.sock?db=2",
        "memory://",
    ],
)
def test_good_redis_urls_pass(url: str) -> None:
    assert build_config(doc({"redis_url": url}), {}).router.redis_url == url


@pytest.mark.parametrize(("url", "fragment"), BAD[:6])
def test_serve_refuses_it_in_one_line(
    tmp_path: Path, gateways: dict[str, Gateway], url: str, fragment: str
) -> None:
    path = write_toml(tmp_path / "router.toml", router_data(url, gateways))
    line = serve_refusal(path)
    assert "router.redis_url" in line and fragment in line
    assert "pw-secret" not in line
