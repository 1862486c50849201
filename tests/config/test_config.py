"""router/config/: defaults, TOML, validation errors that name their key, environment."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from router.config import (
    Config,
    Factor,
    RouterConfig,
    Seconds,
    Secret,
    SystemConfig,
    build_config,
    check_listen,
    field_help,
    field_types,
    load_config,
    parser_for,
)
from router.errors import ConfigError, RouterError


def doc(router: dict[str, Any] | None = None, **systems: dict[str, Any]) -> dict[str, Any]:
    """A minimal valid document with systems a and b, plus the given overrides."""
    tables: dict[str, dict[str, Any]] = {
        "a": {"gateway": "http://gw-a.internal:8080", "public_url": "https://a.example.com:8443"},
        "b": {"gateway": "http://gw-b.internal:8080", "public_url": "https://b.example.com"},
    }
    for sid, table in systems.items():
        tables[sid] = {**tables.get(sid, {}), **table}
    return {"router": dict(router or {}), "systems": tables}


def config_error(data: dict[str, Any], environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_config(data, environ or {})
    return info.value


def serve_refusal(path: Path) -> str:
    """`token-router serve --config path` refused at start: exit 2, one line on stderr, no
    traceback. Returns that line."""
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# --- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    config = build_config(doc(), {})
    r = config.router
    assert r == RouterConfig()
    assert r.listen == "127.0.0.1:8080"
    assert r.admin_listen == "127.0.0.1:8081"
    assert r.redis_url == "redis://127.0.0.1:6379/0"
    assert r.key_prefix == "tokenrouter"
    assert r.admin_token is None
    assert r.preview_secret is None
    assert r.prefer_policy == "unless-offline"
    assert r.cors_origins == ()
    assert r.keyspace_events is True
    assert r.max_body_size == 1_048_576
    a = config.systems["a"]
    assert (a.version, a.ca_file, a.tls_verify, a.stats_url) == ("", "", True, "")
    assert a.max_connections == 200


def test_system_order_and_default_system() -> None:
    config = build_config(doc(), {})
    assert config.system_ids == ("a", "b")
    assert config.default_system == "a"
    chosen = build_config(doc({"default_system": "b"}), {})
    assert chosen.default_system == "b"


def test_public_url_parts() -> None:
    config = build_config(
        doc(c={"gateway": "http://gw-c:1", "public_url": "http://c.example.com"}), {}
    )
    a, b, c = config.systems["a"], config.systems["b"], config.systems["c"]
    assert (a.public_secure, a.public_host, a.public_port) == (True, "a.example.com", 8443)
    assert (b.public_secure, b.public_host, b.public_port) == (True, "b.example.com", 443)
    assert (c.public_secure, c.public_host, c.public_port) == (False, "c.example.com", 80)


def test_config_is_frozen() -> None:
    config = build_config(doc(), {})
    with pytest.raises(AttributeError):
        config.router.listen = "0.0.0.0:1"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.systems["a"].gateway = "http://x"  # type: ignore[misc]


def test_every_field_has_help() -> None:
    assert set(field_help(RouterConfig)) == {f.name for f in fields(RouterConfig)}
    assert set(field_help(SystemConfig)) == {f.name for f in fields(SystemConfig)} - {"id"}
    assert all(text.strip() for text in field_help(RouterConfig).values())


def test_all_types_parsed_from_toml_values() -> None:
    config = build_config(
        doc(
            {
                "listen": "0.0.0.0:9000",
                "admin_listen": "[::1]:9001",
                "redis_url": "memory://",
                "key_prefix": "{tr}:x",
                "admin_token": "s3cret-0123456789",
                "max_body_size": 2048,
                "read_timeout": 3,
                "connect_timeout": 0.5,
                "keyspace_events": False,
                "prefer_policy": "never",
                "log_format": "json",
                "log_level": "WARNING",
                "cors_origins": ["https://shop.example.com", "*"],
            },
            a={"version": "4.2.1", "tls_verify": False, "max_connections": 7},
        ),
        {},
    )
    r = config.router
    assert r.listen == "0.0.0.0:9000"
    assert r.admin_listen == "[::1]:9001"
    assert r.redis_url == "memory://"
    assert r.key_prefix == "{tr}:x"
    assert r.admin_token == Secret("s3cret-0123456789")
    assert r.max_body_size == 2048
    assert r.read_timeout == 3.0 and isinstance(r.read_timeout, float)
    assert r.connect_timeout == 0.5
    assert r.keyspace_events is False
    assert r.prefer_policy == "never"
    assert r.log_format == "json"
    assert r.cors_origins == ("https://shop.example.com", "*")
    a = config.systems["a"]
    assert (a.version, a.tls_verify, a.max_connections) == ("4.2.1", False, 7)


def test_same_listen_allowed_with_port_zero() -> None:
    config = build_config(doc({"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}), {})
    assert config.router.listen == config.router.admin_listen


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)), ("h:65535", ("h", 65535))],
)
def test_check_listen(value: str, expected: tuple[str, int]) -> None:
    assert check_listen("router.listen", value) == expected


# --- validation errors name their key -------------------------------------------------------


def _bad_router(**values: Any) -> dict[str, Any]:
    return doc(values)


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, document, key the error names, fragment of the message)
    ("unknown-table", {**doc(), "extra": {}}, "extra", "unknown table"),
    ("systems-not-table", {"systems": "a"}, "systems", "table"),
    ("no-systems", {"router": {}}, "systems", "no system configured"),
    ("empty-systems", {"systems": {}}, "systems", "no system configured"),
    (
        "bad-system-id",
        doc(**{"A": {"gateway": "http://x", "public_url": "http://y"}}),
        "systems.A",
        "lower-case",
    ),
    (
        "system-id-underscore",
        doc(**{"a_b": {"gateway": "http://x", "public_url": "http://y"}}),
        "systems.a_b",
        "lower-case",
    ),
    ("system-not-table", {"systems": {"a": "http://gw"}}, "systems.a", "must be a table"),
    ("system-number", {"systems": {"a": 5}}, "systems.a", "must be a table"),
    (
        "gateway-missing",
        {"systems": {"a": {"public_url": "https://a.example.com"}}},
        "systems.a.gateway",
        "is required",
    ),
    (
        "public-url-missing",
        {"systems": {"a": {"gateway": "http://gw"}}},
        "systems.a.public_url",
        "is required",
    ),
    ("unknown-system-key", doc(a={"gatway": "http://x"}), "systems.a.gatway", "unknown key"),
    ("system-id-key", doc(a={"id": "b"}), "systems.a.id", "unknown key"),
    ("gateway-scheme", doc(a={"gateway": "htp://x"}), "systems.a.gateway", "not an http(s) URL"),
    ("gateway-no-host", doc(a={"gateway": "http://"}), "systems.a.gateway", "not an http(s) URL"),
    ("gateway-path", doc(a={"gateway": "http://gw/api"}), "systems.a.gateway", "without a path"),
    ("gateway-query", doc(a={"gateway": "http://gw/?x=1"}), "systems.a.gateway", "without a path"),
    ("gateway-not-string", doc(a={"gateway": 8080}), "systems.a.gateway", "not a string"),
    ("public-url-scheme", doc(b={"public_url": "wss://b"}), "systems.b.public_url", "http(s)"),
    ("stats-url-scheme", doc(a={"stats_url": "ftp://gw/stats"}), "systems.a.stats_url", "http(s)"),
    (
        "ca-file-missing",
        doc(a={"ca_file": "/nonexistent/ca.pem"}),
        "systems.a.ca_file",
        "does not exist",
    ),
    ("tls-verify-not-bool", doc(a={"tls_verify": "maybe"}), "systems.a.tls_verify", "boolean"),
    (
        "max-connections-zero",
        doc(a={"max_connections": 0}),
        "systems.a.max_connections",
        "greater than 0",
    ),
    (
        "max-connections-text",
        doc(a={"max_connections": "many"}),
        "systems.a.max_connections",
        "whole number",
    ),
    (
        "max-connections-bool",
        doc(a={"max_connections": True}),
        "systems.a.max_connections",
        "whole number",
    ),
    ("max-body-fraction", _bad_router(max_body_size=1.5), "router.max_body_size", "whole number"),
    ("router-not-table", {**doc(), "router": "x"}, "router", "must be a table"),
    ("unknown-router-key", _bad_router(listn="x"), "router.listn", "unknown key"),
    ("listen-no-port", _bad_router(listen="localhost"), "router.listen", "host:port"),
    ("listen-no-host", _bad_router(listen=":8080"), "router.listen", "host:port"),
    ("listen-port-range", _bad_router(listen="h:70000"), "router.listen", "host:port"),
    ("admin-listen-bad", _bad_router(admin_listen="h:x"), "router.admin_listen", "host:port"),
    (
        "admin-same-port",
        _bad_router(listen="h:1", admin_listen="h:1"),
        "router.admin_listen",
        "must differ",
    ),
    ("redis-scheme", _bad_router(redis_url="http://r:6379"), "router.redis_url", "memory://"),
    ("key-prefix-unsafe", _bad_router(key_prefix="a b"), "router.key_prefix", "unsafe"),
    ("key-prefix-empty", _bad_router(key_prefix=""), "router.key_prefix", "unsafe"),
    (
        "default-system-unknown",
        _bad_router(default_system="c"),
        "router.default_system",
        "not a configured system",
    ),
    ("prefer-policy", _bad_router(prefer_policy="always"), "router.prefer_policy", "one of"),
    ("log-format", _bad_router(log_format="xml"), "router.log_format", "one of"),
    ("log-level", _bad_router(log_level="chatty"), "router.log_level", "debug, info"),
    ("tls-cert-alone", _bad_router(tls_cert="/x.pem"), "router.tls_key", "go together"),
    (
        "tls-cert-missing",
        _bad_router(tls_cert="/nonexistent/c.pem", tls_key="/nonexistent/k"),
        "router.tls_cert",
        "does not exist",
    ),
    (
        "cors-not-origin",
        _bad_router(cors_origins=["shop.example.com"]),
        "router.cors_origins",
        "not an origin",
    ),
    (
        "cors-not-strings",
        _bad_router(cors_origins=[1, 2]),
        "router.cors_origins",
        "list of strings",
    ),
    ("read-timeout-zero", _bad_router(read_timeout=0), "router.read_timeout", "greater than 0"),
    (
        "read-timeout-negative",
        _bad_router(read_timeout=-1.0),
        "router.read_timeout",
        "greater than 0",
    ),
    (
        "read-timeout-nan",
        _bad_router(read_timeout=float("nan")),
        "router.read_timeout",
        "finite",
    ),
    (
        "read-timeout-inf",
        _bad_router(read_timeout=float("inf")),
        "router.read_timeout",
        "finite",
    ),
    ("read-timeout-text", _bad_router(read_timeout="soon"), "router.read_timeout", "seconds"),
    ("read-timeout-bool", _bad_router(read_timeout=True), "router.read_timeout", "seconds"),
    ("access-log-number", _bad_router(access_log=2), "router.access_log", "boolean"),
    ("admin-token-number", _bad_router(admin_token=1234), "router.admin_token", "not a string"),
]


@pytest.mark.parametrize(("data", "key", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_validation_error_names_key(data: dict[str, Any], key: str, fragment: str) -> None:
    error = config_error(data)
    assert error.key == key
    assert str(error).startswith(f"{key}: ")
    assert fragment in str(error)
    assert isinstance(error, RouterError)


def test_bad_value_is_quoted_in_message() -> None:
    error = config_error(doc(c={"gateway": "htp://x", "public_url": "https://c"}))
    assert str(error) == "systems.c.gateway: 'htp://x' is not an http(s) URL"


def test_unknown_key_lists_known_keys() -> None:
    message = str(config_error(_bad_router(listn="x")))
    assert "admin_listen" in message and "listen" in message


def test_tls_files_accepted_when_present(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    config = build_config(doc({"tls_cert": str(cert), "tls_key": str(key)}), {})
    assert config.router.tls_cert == str(cert)


def test_ca_file_accepted_when_present(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    config = build_config(doc(a={"gateway": "https://gw-a:8443", "ca_file": str(ca)}), {})
    assert config.systems["a"].ca_file == str(ca)


# --- cors_origins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["https://a.example.com", "http://b:8080"], ("https://a.example.com", "http://b:8080")),
        (
            "https://a.example.com, https://b.example.com",
            ("https://a.example.com", "https://b.example.com"),
        ),
        ("https://a.example.com,,", ("https://a.example.com",)),
        ("*", ("*",)),
        ([], ()),
        ("", ()),
    ],
    ids=["list", "comma-string", "empty-items", "star", "empty-list", "empty-string"],
)
def test_cors_origins(value: list[str] | str, expected: tuple[str, ...]) -> None:
    assert build_config(doc({"cors_origins": value}), {}).router.cors_origins == expected


# --- secrets --------------------------------------------------------------------------------


def test_secret_never_shows() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2")
    assert secret != Secret("other")
    assert secret != "hunter2"
    assert hash(secret) == hash(Secret("hunter2"))


def test_secrets_hidden_in_config_repr() -> None:
    config = build_config(
        doc({"admin_token": "tok-1234567890abcdef", "preview_secret": "prev-6543210abcdef"}), {}
    )
    for text in (repr(config), str(config), repr(config.router)):
        assert "tok-1234567890abcdef" not in text
        assert "prev-6543210abcdef" not in text
    assert config.router.admin_token is not None
    assert config.router.admin_token.reveal() == "tok-1234567890abcdef"
    assert config.router.preview_secret is not None
    assert config.router.preview_secret.reveal() == "prev-6543210abcdef"


def test_empty_secret_means_unset() -> None:
    config = build_config(doc({"admin_token": "", "preview_secret": ""}), {})
    assert config.router.admin_token is None
    assert config.router.preview_secret is None


# --- admin_token_file -----------------------------------------------------------------------


def test_admin_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  from-file-0123456789  \nsecond line ignored\n")
    config = build_config(doc({"admin_token_file": str(path)}), {})
    assert config.router.admin_token == Secret("from-file-0123456789")
    assert "from-file-0123456789" not in repr(config)


def test_inline_admin_token_wins_over_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file-0123456789\n")
    config = build_config(
        doc({"admin_token": "inline-0123456789ab", "admin_token_file": str(path)}), {}
    )
    assert config.router.admin_token == Secret("inline-0123456789ab")


def test_admin_token_file_missing(tmp_path: Path) -> None:
    error = config_error(doc({"admin_token_file": str(tmp_path / "nope")}))
    assert error.key == "router.admin_token_file"
    assert "cannot read" in str(error) and "nope" in str(error)


@pytest.mark.parametrize("content", ["", "\n", "   \nsecond\n"], ids=["empty", "newline", "blank"])
def test_admin_token_file_empty(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    error = config_error(doc({"admin_token_file": str(path)}))
    assert error.key == "router.admin_token_file"
    assert "is empty" in str(error)


@pytest.mark.parametrize("key", ["preview_secret", "redis_password", "redis_sentinel_password"])
def test_secret_file(tmp_path: Path, key: str) -> None:
    path = tmp_path / key
    path.write_text("from-a-mounted-secret\n")
    config = build_config(doc(), {f"TOKENROUTER_{key.upper()}_FILE": str(path)})
    value = getattr(config.router, key)
    assert value is not None and value.reveal() == "from-a-mounted-secret"
    assert "from-a-mounted-secret" not in repr(config)


@pytest.mark.parametrize("key", ["preview_secret", "redis_password", "redis_sentinel_password"])
def test_secret_file_and_inline_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / key
    path.write_text("from-a-mounted-secret\n")
    error = config_error(doc({key: "inline-secret-123", f"{key}_file": str(path)}))
    assert error.key == f"router.{key}_file"
    assert "not both" in str(error)


def test_secret_file_missing(tmp_path: Path) -> None:
    error = config_error(doc({"preview_secret_file": str(tmp_path / "nope")}))
    assert error.key == "router.preview_secret_file"
    assert "cannot read" in str(error)


def test_admin_token_file_from_env(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("env-file-token-0123456789\n")
    config = build_config(doc(), {"TOKENROUTER_ADMIN_TOKEN_FILE": str(path)})
    assert config.router.admin_token == Secret("env-file-token-0123456789")


# --- environment overrides ------------------------------------------------------------------


def test_env_overrides_router_keys() -> None:
    environ = {
        "TOKENROUTER_LISTEN": "0.0.0.0:9090",
        "TOKENROUTER_MAX_BODY_SIZE": "4096",
        "TOKENROUTER_READ_TIMEOUT": "2.5",
        "TOKENROUTER_KEYSPACE_EVENTS": "off",
        "TOKENROUTER_ACCESS_LOG": "FALSE",
        "TOKENROUTER_ADMIN_TOKEN": "env-secret-0123456789",
        "TOKENROUTER_CORS_ORIGINS": "https://a.example.com,https://b.example.com",
        "TOKENROUTER_PREFER_POLICY": "never",
    }
    config = build_config(
        doc({"listen": "127.0.0.1:1000", "admin_token": "file-secret-0123456789"}), environ
    )
    r = config.router
    assert r.listen == "0.0.0.0:9090"  # environment > file
    assert r.max_body_size == 4096
    assert r.read_timeout == 2.5
    assert r.keyspace_events is False
    assert r.access_log is False
    assert r.admin_token == Secret("env-secret-0123456789")
    assert r.cors_origins == ("https://a.example.com", "https://b.example.com")
    assert r.prefer_policy == "never"


def test_env_overrides_system_keys() -> None:
    environ = {
        "TOKENROUTER_SYSTEMS_A_GATEWAY": "http://10.0.0.1:8080",
        "TOKENROUTER_SYSTEMS_A_PUBLIC_URL": "https://a2.example.com",
        "TOKENROUTER_SYSTEMS_B_TLS_VERIFY": "false",
        "TOKENROUTER_SYSTEMS_B_MAX_CONNECTIONS": "17",
        "TOKENROUTER_SYSTEMS_B_STATS_URL": "http://gw-b.internal:8080/stats",
    }
    config = build_config(doc(a={"version": "1.0"}), environ)
    a, b = config.systems["a"], config.systems["b"]
    assert a.gateway == "http://10.0.0.1:8080"
    assert a.public_url == "https://a2.example.com"
    assert a.version == "1.0"  # file values the environment does not name stay
    assert b.tls_verify is False
    assert b.max_connections == 17
    assert b.stats_url == "http://gw-b.internal:8080/stats"


def test_env_system_id_dash_written_underscore() -> None:
    environ = {
        "TOKENROUTER_SYSTEMS_GW_BLUE_2_GATEWAY": "http://blue:8080",
        "TOKENROUTER_SYSTEMS_GW_BLUE_2_PUBLIC_URL": "https://blue.example.com",
    }
    config = build_config(doc(), environ)
    assert "gw-blue-2" in config.systems
    assert config.systems["gw-blue-2"].gateway == "http://blue:8080"
    assert config.system_ids == ("a", "b", "gw-blue-2")


def test_env_overrides_file_system_with_dash(tmp_path: Path) -> None:
    data = doc(**{"gw-a": {"gateway": "http://x:1", "public_url": "https://x"}})
    config = build_config(data, {"TOKENROUTER_SYSTEMS_GW_A_VERSION": "9.9"})
    assert config.systems["gw-a"].version == "9.9"


def test_env_only_configuration() -> None:
    environ = {
        "TOKENROUTER_REDIS_URL": "memory://",
        "TOKENROUTER_SYSTEMS_A_GATEWAY": "http://gw-a:8080",
        "TOKENROUTER_SYSTEMS_A_PUBLIC_URL": "https://a.example.com",
    }
    config = load_config(None, environ)
    assert config.system_ids == ("a",)
    assert config.router.redis_url == "memory://"


def test_env_system_partial_is_required_error() -> None:
    error = config_error(doc(), {"TOKENROUTER_SYSTEMS_C_GATEWAY": "http://gw-c:1"})
    assert error.key == "systems.c.public_url"
    assert "is required" in str(error)


def test_env_bad_value_names_key() -> None:
    error = config_error(doc(), {"TOKENROUTER_MAX_BODY_SIZE": "lots"})
    assert error.key == "router.max_body_size"
    assert "'lots'" in str(error)
    error = config_error(doc(), {"TOKENROUTER_SYSTEMS_A_TLS_VERIFY": "perhaps"})
    assert error.key == "systems.a.tls_verify"


@pytest.mark.parametrize(
    "name",
    [
        "TOKENROUTER_LISTN",
        "TOKENROUTER_SYSTEMS_A_GATWAY",
        "TOKENROUTER_SYSTEMS_GATEWAY",
        "TOKENROUTER_SYSTEMS_A_ID",
        "TOKENROUTER_",
    ],
)
def test_unknown_env_refused(name: str) -> None:
    error = config_error(doc(), {name: "x"})
    assert error.key == name


def test_unrelated_env_ignored() -> None:
    environ = {"PATH": "/usr/bin", "TOKENROUTERX": "1", "TOKENROUTER_CONFIG": "/etc/x.toml"}
    assert build_config(doc(), environ).router == RouterConfig()


# --- load_config: the file ------------------------------------------------------------------

TOML = """
[router]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:18081"
redis_url = "redis://127.0.0.1:6379/3"
admin_token = "file-token-0123456789"
cors_origins = ["https://shop.example.com"]
read_timeout = 4

[systems.a]
gateway = "http://gw-a.internal:8080"
public_url = "https://a.example.com:8443"
version = "1.0"

[systems.b]
gateway = "https://gw-b.internal:8443"
public_url = "https://b.example.com:8443"
tls_verify = false
"""


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(TOML)
    config = load_config(path, {})
    assert isinstance(config, Config)
    assert config.router.listen == "127.0.0.1:18080"
    assert config.router.redis_url == "redis://127.0.0.1:6379/3"
    assert config.router.read_timeout == 4.0
    assert config.router.admin_token == Secret("file-token-0123456789")
    assert config.router.cors_origins == ("https://shop.example.com",)
    assert config.systems["b"].tls_verify is False
    assert load_config(str(path), {"TOKENROUTER_LISTEN": "127.0.0.1:1"}).router.listen == (
        "127.0.0.1:1"
    )


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml", {})
    assert info.value.key == "--config"
    assert "does not exist" in str(info.value)
    assert "missing.toml" in str(info.value)


def test_load_config_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[router\nlisten = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == "--config"
    assert "is not valid TOML" in str(info.value)


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, {})
    assert info.value.key == "--config"
    assert "cannot read" in str(info.value)


def test_load_config_validation_error_from_file(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(TOML + '\n[systems.c]\ngateway = "htp://c"\npublic_url = "https://c"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == "systems.c.gateway"


def test_whole_float_accepted_for_int_key() -> None:
    assert build_config(doc({"max_body_size": 2048.0}), {}).router.max_body_size == 2048


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (0.0, 0.0), ("0", 0.0), ("0.00", 0.0), (2, 2.0), ("1.5", 1.5)],
    ids=["int-zero", "float-zero", "text-zero", "text-zero-decimals", "int", "text"],
)
def test_seconds_key_allows_zero(value: object, expected: float) -> None:
    assert build_config(doc({"stop_delay": value}), {}).router.stop_delay == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (-1, "0 or more"),
        ("-0.5", "0 or more"),
        (float("nan"), "0 or more"),
        (float("inf"), "finite"),
        ("inf", "finite"),
        (False, "seconds"),
        ("soon", "seconds"),
        ([1], "seconds"),
    ],
    ids=["negative", "negative-text", "nan", "inf", "inf-text", "bool", "text", "list"],
)
def test_seconds_key_refuses(value: object, fragment: str) -> None:
    error = config_error(doc({"stop_delay": value}))
    assert error.key == "router.stop_delay"
    assert fragment in str(error)


def test_seconds_key_from_env() -> None:
    assert build_config(doc(), {"TOKENROUTER_STOP_DELAY": "0"}).router.stop_delay == 0.0
    assert build_config(doc(), {"TOKENROUTER_STOP_DELAY": "3"}).router.stop_delay == 3.0


# --- named operators and token strength ------------------------------------------------------

STRONG = "0123456789abcdef-strong"


def test_named_operators_from_table_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "bob"
    path.write_text("bob-token-0123456789\n")
    config = build_config(
        doc(
            {
                "admin_token": STRONG,
                "admin_tokens": {"alice": "alice-token-0123456789", "bob_file": str(path)},
            }
        ),
        {"TOKENROUTER_ADMIN_TOKENS_CAROL": "carol-token-0123456789"},
    )
    operators = config.router.operators()
    assert {name: token.reveal() for name, token in operators.items()} == {
        "admin": STRONG,
        "alice": "alice-token-0123456789",
        "bob": "bob-token-0123456789",
        "carol": "carol-token-0123456789",
    }
    assert "alice-token" not in repr(config)


def test_named_operators_without_admin_token() -> None:
    config = build_config(doc({"admin_tokens": {"alice": "alice-token-0123456789"}}), {})
    assert config.router.admin_token is None
    assert list(config.router.operators()) == ["alice"]


@pytest.mark.parametrize(
    ("router", "environ", "key", "fragment"),
    [
        ({"admin_token": "short"}, {}, "router.admin_token", "at least 16"),
        ({"admin_token": " " * 20}, {}, "router.admin_token", "whitespace"),
        ({"admin_token": f" {STRONG}"}, {}, "router.admin_token", "whitespace"),
        ({}, {"TOKENROUTER_ADMIN_TOKEN": "change-me"}, "router.admin_token", "at least 16"),
        ({"admin_tokens": {"alice": "short"}}, {}, "router.admin_tokens.alice", "at least 16"),
        ({"admin_tokens": {"Alice": STRONG}}, {}, "router.admin_tokens.Alice", "operator name"),
        ({"admin_tokens": {"a.b": STRONG}}, {}, "router.admin_tokens.a.b", "operator name"),
        ({"admin_tokens": "alice"}, {}, "router.admin_tokens", "table"),
        (
            {"admin_tokens": {"alice": STRONG, "alice_file": "/x"}},
            {},
            "router.admin_tokens.alice_file",
            "not both",
        ),
        (
            {"admin_token": STRONG, "admin_tokens": {"admin": STRONG + "x"}},
            {},
            "router.admin_tokens.admin",
            "clashes",
        ),
        (
            {"admin_tokens": {"alice": STRONG, "bob": STRONG}},
            {},
            "router.admin_tokens.bob",
            "same token",
        ),
        ({}, {"TOKENROUTER_ADMIN_TOKENS": "x"}, "TOKENROUTER_ADMIN_TOKENS", "<NAME>"),
        ({"trusted_networks": ["10.0.0.0/8", "nope"]}, {}, "router.trusted_networks", "nope"),
    ],
)
def test_bad_credentials_and_networks_name_the_key(
    router: dict[str, Any], environ: dict[str, str], key: str, fragment: str
) -> None:
    error = config_error(doc(router), environ)
    assert error.key == key
    assert fragment in str(error)
    assert STRONG not in str(error) and "short" not in str(error).split(": ", 1)[1]


def test_short_token_file_names_the_file_key(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tiny\n")
    error = config_error(doc({"admin_token_file": str(path)}))
    assert error.key == "router.admin_token_file"
    error = config_error(doc({"admin_tokens": {"bob_file": str(path)}}))
    assert error.key == "router.admin_tokens.bob_file"


def test_new_timeouts_and_limits_have_sane_defaults() -> None:
    r = build_config(doc(), {}).router
    assert r.total_timeout > r.read_timeout > 0
    assert r.max_response_size == 16 * 1024 * 1024
    assert r.client_header_timeout == 60.0
    assert r.trusted_networks == ()


# --- the parser table ------------------------------------------------------------------------

# Keys whose values are not one TOML value of a type but parsed apart (a table of names).
PARSED_APART = {"admin_tokens"}


@pytest.mark.parametrize("cls", [RouterConfig, SystemConfig], ids=["router", "systems"])
def test_every_key_has_a_parser_for_its_type(cls: type[Any]) -> None:
    """A new field of a type the table lacks fails here, not as a KeyError at load."""
    missing = []
    for name, hint in field_types(cls).items():
        if name in PARSED_APART or name == "id":
            continue
        try:
            parser_for(hint)
        except TypeError as exc:
            missing.append(f"{name}: {exc}")
    assert missing == []


def test_parsers_are_keyed_on_types_not_spellings() -> None:
    assert parser_for(float)("k", "1.5") == 1.5
    with pytest.raises(ConfigError, match="must be greater than 0"):
        parser_for(float)("k", "0")
    # Seconds and Factor are floats to mypy but parsed with 0 allowed.
    assert parser_for(Seconds)("k", "0") == 0.0
    assert parser_for(Factor)("k", 0) == 0.0
    # Any `X | None` of a known X works, an empty value is None.
    assert parser_for(float | None)("k", "") is None
    assert parser_for(float | None)("k", "2") == 2.0
    assert parser_for(int | None)("k", 3) == 3
    with pytest.raises(TypeError, match="no configuration parser"):
        parser_for(dict[str, int])
