"""The release keys of the static configuration, checked together at start."""

from __future__ import annotations

import pytest

from router.config import build_config
from router.errors import ConfigError
from router.proxy.paths import is_library_path
from router.releases.settings import check_release_config

JS = "/gateway/adapter.js"
CSS = "/assistserver/sdk/web/consumer/assist.css"
BIG = "/gateway/fusion-client-sdk.js"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (JS, True),
        ("/gateway/csdk-phone.js", True),
        (CSS, True),
        ("/gateway/sessions/session", False),
        ("/gateway/sub/x.js", False),
        ("/assistserver/sdk/web/../../etc/passwd", False),
        ("/assistserver/sdk/web//x.js", False),
        ("/v/0123456789abcdef/gateway/adapter.js", False),
        ("/etc/passwd", False),
    ],
)
def test_is_library_path(path: str, expected: bool) -> None:
    assert is_library_path(path) is expected


def test_release_config_checks() -> None:
    gw = {"gateway": "http://127.0.0.1:1", "public_url": "https://a.example.com"}
    config = build_config({"systems": {"a": gw}}, {})
    assert config.router.release_retention_days == 30.0
    assert BIG in config.router.release_paths
    check_release_config(config)
    env = {"TOKENROUTER_RELEASE_PATHS": f"{JS}, {CSS}", "TOKENROUTER_RELEASE_MAX_BYTES": "1000"}
    config = build_config({"systems": {"a": gw}}, env)
    assert config.router.release_paths == (JS, CSS)
    assert config.router.release_max_bytes == 1000
    bad = build_config({"router": {"release_paths": ["/etc/passwd"]}, "systems": {"a": gw}}, {})
    with pytest.raises(ConfigError, match=r"router\.release_paths: '/etc/passwd' is not"):
        check_release_config(bad)
    slow = {"release_retention_days": 0.0001, "release_check_interval": 60}
    with pytest.raises(ConfigError, match=r"router\.release_check_interval"):
        check_release_config(build_config({"router": slow, "systems": {"a": gw}}, {}))
